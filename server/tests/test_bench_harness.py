"""The bench harness (loadtest/bench/run.py) runs end to end: --quick, wizgy, waitress
and the pure-Python floor (floor.py), which is also tested here on its own.

Real servers, real wrk, about 15 s. Speed is never asserted here, only that every
number the harness reports was measured (> 0), that the table prints, and that no
server it started is left running. The servers run under an interpreter that has wizgy
and waitress: this one, else the bench venv's, else this one with waitress installed
once by pip into a temporary folder on PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    SERVER_PYTHON,
    connect,
    read_response,
    read_until_close,
    require_tool,
    server_implementation,
    skip_or_fail,
)

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "loadtest" / "bench" / "run.py"
BENCH_VENV_PYTHON = ROOT / "loadtest" / "bench" / ".venv" / "bin" / "python"
SERVERS = ["wizgy-evloop", "waitress", "python-floor"]
FLOOR = ROOT / "loadtest" / "bench" / "floor.py"
BENCH_VENV_TIMEOUT = 1200  # building the bench venv on a fresh clone: a few minutes

pytestmark = pytest.mark.slow  # wrk runs and the bench venv: `make test`, not test-fast
# A test that first builds the bench venv (the bench_venv fixture, set up inside the
# first test that asks for it) is given that build's time on top of its own: the
# suite's 300 s per test (pyproject.toml) would cut the build short on a fresh clone.
builds_bench_venv = pytest.mark.timeout(BENCH_VENV_TIMEOUT + 300)


@pytest.fixture(autouse=True)
def wrk_installed():
    require_tool("wrk")


def has_modules(python: Path | str, *modules: str) -> bool:
    code = f"import {', '.join(modules)}"
    return (
        subprocess.run([str(python), "-c", code], check=False, capture_output=True).returncode == 0
    )


def waitress_pin() -> str:
    for line in (ROOT / "server" / "constraints.txt").read_text().splitlines():
        if line.startswith("waitress=="):
            return line.strip()
    return "waitress"


@pytest.fixture(scope="module")
def server_python(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(interpreter for the servers, extra environment) with wizgy and waitress importable."""
    if SERVER_PYTHON != sys.executable:  # WIZGY_TEST_PYTHON: that one (make test-pypy's has both)
        if not has_modules(SERVER_PYTHON, "waitress"):
            skip_or_fail(f"waitress not importable by {SERVER_PYTHON}")
        return SERVER_PYTHON, {"PYTHONPATH": str(ROOT / "server")}
    if importlib.util.find_spec("waitress"):
        return sys.executable, {}
    if BENCH_VENV_PYTHON.exists() and has_modules(BENCH_VENV_PYTHON, "wizgy", "waitress"):
        return str(BENCH_VENV_PYTHON), {}
    target = tmp_path_factory.mktemp("waitress")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            waitress_pin(),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        skip_or_fail(f"waitress not installable here: {done.stderr.strip()[-200:]}")
    path = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return sys.executable, {"PYTHONPATH": path}


@pytest.fixture(scope="module")
def quick_run(server_python, tmp_path_factory):
    python, extra_env = server_python
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--servers",
            ",".join(SERVERS),
            "--python",
            python,
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        env=dict(os.environ, **extra_env),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [results] = out.glob("*.json")
    return done.stdout, json.loads(results.read_text()), out


def test_every_server_measured_with_numbers(quick_run):
    _, results, _ = quick_run
    rows = {row["server"]: row for row in results["summary"]["hello"]}
    assert set(rows) == set(SERVERS)
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row)
        for key in (
            "rps_median",
            "rps_min",
            "rps_max",
            "p50_ms",
            "p99_ms",
            "cpu_percent",
            "rss_worker_mib",
            "rss_total_mib",
        ):
            assert row[key] > 0, (name, key, row)
    assert rows["wizgy-evloop"]["x_wizgy"] == 1.0
    assert len(results["meta"]["loadavg_start"]) == 3


def test_warm_up_is_sampled_second_by_second(quick_run):
    stdout, results, _ = quick_run
    assert results["meta"]["warmup"] == 1  # --quick, CPython servers only
    for run in results["runs"]:
        assert len(run["warmup_rps"]) == 1 and run["warmup_rps"][0] > 0, run
    for row in results["summary"]["hello"]:
        # the second in which it first reached 90% of its measured rate, or None: not yet
        assert row["warmup_s"] in (1, None) and row["warmup_window_s"] == 1, row
    assert "warm-up s" in stdout


@builds_bench_venv
def test_pypy_servers_run_on_pypy_and_a_peer_that_cannot_is_reported(tmp_path, bench_venv):
    # (bench_venv: run.py draws its chart with the CPython bench venv's interpreter)
    require_tool("pypy3")
    pypy = SERVER_PYTHON if server_implementation() == "PyPy" else "pypy3"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--servers", "wizgy-pypy,bjoern-pypy",
         "--pypy", pypy, "--warmup", "2", "--duration", "2", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=90,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "server")),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [results] = tmp_path.glob("*.json")
    results = json.loads(results.read_text())
    assert results["meta"]["runtimes"]["pypy"].startswith("PyPy 7.")
    rows = {row["server"]: row for row in results["summary"]["hello"]}
    assert rows["wizgy-pypy"]["status"] == "ok" and rows["wizgy-pypy"]["rps_median"] > 0
    [wizgy_run] = [run for run in results["runs"] if run["server"] == "wizgy-pypy"]
    assert len(wizgy_run["warmup_rps"]) == 2 and min(wizgy_run["warmup_rps"]) > 0
    # bjoern is C against CPython's API: not built for PyPy, said so in the table
    assert rows["bjoern-pypy"]["status"].startswith("not installed: bjoern not importable")
    assert "bjoern-pypy" in done.stdout and "not installed" in done.stdout


def test_table_and_markdown_are_written(quick_run):
    stdout, _, out = quick_run
    assert "== hello" in stdout and "req/s" in stdout and "x wizgy" in stdout
    for name in SERVERS:
        assert any(line.startswith(name) for line in stdout.splitlines()), name
    markdown = (out / "latest.md").read_text()
    assert "| server |" in markdown and "waitress" in markdown


def test_no_server_left_running(quick_run):
    _, results, _ = quick_run
    pids = [run["pid"] for run in results["runs"] if "pid" in run]
    assert len(pids) == len(SERVERS)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _recycled(pid), pid


def _recycled(pid: int) -> bool:
    """The pid now belongs to another process (not the leader of the server's group)."""
    try:
        return os.getpgid(pid) != pid
    except ProcessLookupError:
        return True


@pytest.fixture(scope="module")
def bench_venv() -> None:
    """run.py builds the bench venv (every peer, bjoern compiled) the first time, a few
    minutes on a fresh clone: done here, apart, so that the run below keeps its bound."""
    code = "import bench_venv; bench_venv.ensure()"
    done = subprocess.run([sys.executable, "-c", code], cwd=RUN.parent, check=False,
                          capture_output=True, text=True, timeout=BENCH_VENV_TIMEOUT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@builds_bench_venv
def test_a_scenario_a_server_skips_is_reported_not_run(tmp_path, bench_venv):
    done = subprocess.run(
        [sys.executable, str(RUN), "--scenarios", "post-1m", "--servers", "python-floor",
         "--rounds", "1", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [results] = tmp_path.glob("*.json")
    [run] = json.loads(results.read_text())["runs"]
    assert run["status"] == "n/a: reads no request bodies" and "pid" not in run
    assert "python-floor  n/a: reads no request bodies" in done.stdout


@pytest.fixture
def floor():
    """floor.py serving the bench's hello app, in its own process group."""
    with socket_port() as port:
        proc = subprocess.Popen(
            [sys.executable, str(FLOOR), f"127.0.0.1:{port}", "1", "hello:app"],
            cwd=FLOOR.parent, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        assert "Listening at" in proc.stdout.readline()
        yield port
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


@contextlib.contextmanager
def socket_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


def test_the_floor_answers_keep_alive_and_close_like_a_server(floor):
    # wrk counts its responses only if they are well framed: Content-Length on each,
    # two requests in one packet both answered, and Connection: close said and done.
    # (Each connection's first request line picks the page for all its requests.)
    get = b"GET /%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
    with connect(floor) as sock:
        sock.sendall(get % (b"stream64k", b""))
        status, headers, body = read_response(sock)
        assert (status, len(body), headers["content-length"]) == (200, 65536, "65536")
    with connect(floor) as sock:
        sock.sendall(get % (b"", b"") * 2)
        assert read_response(sock)[2] == read_response(sock)[2] == b"Hello, World!"
        sock.sendall(get % (b"", b"Connection: close\r\n"))
        status, headers, body = read_response(sock)
        assert (body, headers["connection"]) == (b"Hello, World!", "close")
        assert read_until_close(sock) == b""
