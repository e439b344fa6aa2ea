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
