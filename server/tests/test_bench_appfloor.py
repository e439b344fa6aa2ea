"""loadtest/bench/appfloor.py, an app's own cost with no server: it really calls the app
the number of times it says, reads every body, and reports a measured rate; and
cpucost.py, which turns run.py's records into requests per server CPU-second. Speed is
never asserted; the numbers only have to exist and add up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

APPFLOOR = Path(__file__).resolve().parents[2] / "loadtest" / "bench" / "appfloor.py"
HELLO = b"Hello, World!"  # loadtest/bench/hello.py's body for /


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(APPFLOOR), *args], capture_output=True,
                          text=True, timeout=120)


def test_hello_is_called_n_times_and_a_rate_is_reported():
    done = run("hello:app", "--calls", "700", "--rounds", "3", "--warmup", "0.2")
    assert done.returncode == 0, done.stderr
    rate = re.search(r"hello:app / alone on CPython [\d.]+: ([\d,]+) calls per CPU-second "
                     r"= ([\d.]+) us per call \(best of 3 rounds of 700; "
                     r"median ([\d,]+) = ([\d.]+) us\)", done.stdout)
    assert rate, done.stdout
    best, median = (int(rate.group(i).replace(",", "")) for i in (1, 3))
    assert best >= median > 0, done.stdout
    assert float(rate.group(2)) > 0 and float(rate.group(4)) > 0, done.stdout
    count = re.search(r"calls (\d+) after (\d+) warm-up calls; status 200 OK; "
                      r"body bytes (\d+) in the timed calls", done.stdout)
    assert count, done.stdout
    assert int(count.group(1)) == 3 * 700, done.stdout
    assert int(count.group(2)) >= 1000, done.stdout  # 0.2 CPU-s of warm-up is > 1 batch
    assert int(count.group(3)) == 3 * 700 * len(HELLO), done.stdout  # every body read


def test_an_app_that_does_not_answer_2xx_is_not_measured():
    done = run("hello:app", "--path", "/missing", "--calls", "10", "--rounds", "1",
               "--warmup", "0")
    assert done.returncode != 0
    assert "answered '404 Not Found', not 2xx" in done.stderr, done.stderr


CPUCOST = APPFLOOR.parent / "cpucost.py"


def test_cpucost_divides_requests_by_server_cpu_seconds(tmp_path):
    # run.py's record shape: per run, wrk's requests and the server's CPU-seconds
    def record(server, requests, cpu_seconds, round_no, status="ok"):
        return {"scenario": "hello", "server": server, "round": round_no, "status": status,
                "loadavg": [1.5 + round_no, 1.0, 1.0],
                "wrk": {"requests": requests, "duration_us": 2_000_000},
                "watch": {"cpu_seconds": cpu_seconds}}

    runs = [record("a", 10_000, 0.5, 1), record("a", 30_000, 1.0, 2), record("a", 9_000, 1.0, 3),
            record("b", 0, 0.0, 1, status="failed: did not start")]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"meta": {}, "runs": runs}))
    done = subprocess.run([sys.executable, str(CPUCOST), str(results)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "load average over the runs: 2.5-4.5 (median 3.0)" in done.stdout
    # rates 20,000, 30,000 and 9,000 per CPU-s: median 20,000 = 50 us; median req/s 5,000
    row = re.search(r"^hello +a +20,000 +\(9,000-30,000\) +50\.0 +5,000$", done.stdout, re.M)
    assert row, done.stdout
    assert not re.search(r"^hello +b ", done.stdout, re.M)  # a failed run is no number
