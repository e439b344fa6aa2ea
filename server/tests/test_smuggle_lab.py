"""The smuggling lab (loadtest/smuggle/run.py) against wizgy alone, over real sockets.

Every file of the invalid corpus, with its `# limits:` applied as command-line flags,
is sent with a benign second request behind it on the same connection. wizgy must
answer with the file's status, close the connection, and hand the app nothing: not the
bad request, and not the request behind it (which would mean it kept reading a
connection whose framing it had refused). Peers are the lab's business, not asserted.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO, SERVER_PYTHON

LAB = REPO / "loadtest" / "smuggle" / "run.py"
pytestmark = pytest.mark.slow  # the lab's run against its peers: `make test` only


def load_lab():
    spec = importlib.util.spec_from_file_location("smuggle_lab", LAB)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


lab = load_lab()
CASES = lab.corpus("invalid")


@pytest.fixture(scope="module")
def report():
    return lab.run_lab(["wizgy"], CASES, timeout=2.0, python=SERVER_PYTHON, log=lambda _: None)


def test_the_lab_ran_every_rule(report):
    assert report["servers"]["wizgy"]["unavailable"] is None
    assert len(CASES) >= 60
    assert set(report["results"]["wizgy"]) == {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_wizgy_refuses_and_closes(report, case):
    result = report["results"]["wizgy"][case.name]
    assert "error" not in result, result
    assert result["status"] == case.expect_status, result
    assert result["responses"] == [case.expect_status], "answered more than once"
    assert result["closed"], "connection left open after a refusal"
    assert result["app_saw"] == [], "the app was handed a request"
    assert lab.verdict(result) == "refused"


def test_report_renders(report):
    text = lab.markdown(report)
    assert text.count("\n| `") == len(CASES)
    assert "**" not in text.split("| rule |")[1]  # wizgy never differs from itself
