"""loadtest/bench/inprocess.py, the in-process cost meter: both of its modes run and
report a measured number. Speed is never asserted; the numbers only have to exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SERVER_PYTHON, require_tool

INPROCESS = Path(__file__).resolve().parents[2] / "loadtest" / "bench" / "inprocess.py"


def run(*args: str, python: str = sys.executable) -> str:
    done = subprocess.run([python, str(INPROCESS), *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_timing_mode_reports_microseconds_per_request():
    out = run("--requests", "500", python=SERVER_PYTHON)
    found = re.fullmatch(r"hello:app /: ([\d.]+) us per request \(best of 7 runs of 500\)\n", out)
    assert found and float(found.group(1)) > 0, out


@pytest.mark.slow
def test_instructions_mode_counts_under_valgrind():
    # on CPython, whatever runs the server: instructions are CPython's measure (a JIT's
    # count says little, and valgrind is slow on it)
    require_tool("valgrind")
    out = run("--instructions", "--requests", "300")
    found = re.fullmatch(r"hello:app /: ([\d,]+) instructions per request "
                         r"\(valgrind, 300 requests\)\n", out)
    assert found, out
    # a served request is tens of thousands of instructions; nothing served would be ~0
    assert int(found.group(1).replace(",", "")) > 5000, out


WORKER = INPROCESS.with_name("worker_instructions.py")


@pytest.mark.slow
def test_worker_instructions_counts_the_whole_worker_in_both_loads():
    # the real server under valgrind, its worker's count: a new connection per request
    # must cost more than a keep-alive one (accept, a parser, a close), both far from 0
    require_tool("valgrind")
    done = subprocess.run([sys.executable, str(WORKER), "--requests", "100"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^(keep|close): ([\d,]+) instructions per request "
                             r"\(whole worker, valgrind, 100 requests\)$",
                             done.stdout, re.MULTILINE))
    assert counts.keys() == {"keep", "close"}, done.stdout
    keep, close = (int(counts[mode].replace(",", "")) for mode in ("keep", "close"))
    assert 5000 < keep < close, done.stdout
