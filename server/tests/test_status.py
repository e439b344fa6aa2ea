"""The status listener (--status-bind): /status and /metrics checked against /proc,
the process it runs in, and `wizgy top`. Real servers, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    SERVER,
    SERVER_PYTHON,
    TEST_APPS,
    children_of,
    open_fds,
    proc_state,
    require_tool,
    run_wizgy,
    zombies_of,
)

STATUS_AT = r"Status at: http://127\.0\.0\.1:(\d+) \((\d+)\)"
KEYS = {"model", "runtime", "lesson", "app", "pid", "children", "zombies", "open_fds", "nofile_limit",
        "nproc_limit", "requests_total", "responses_4xx", "responses_5xx", "fork_failures",
        "emfile_events", "connections_active", "connections_idle", "processes", "events",
        "hostname"}
PROCESS_KEYS = {"pid", "role", "state", "open_fds", "rss_bytes", "cpu_seconds", "requests"}
MAIN_ROLE = {"prefork": "master", "evloop": "master", "fork": "parent"}


@contextlib.contextmanager
def status_server(model: str, *args: str, **kwargs):
    extra = ("--workers", "2") if model in ("prefork", "evloop") else ()
    with run_wizgy("-k", model, *extra, "--status-bind", "127.0.0.1:0", *args,
                   "testapp:app", **kwargs) as server:
        m = server.wait_for_output(STATUS_AT)
        server.status_url = f"http://127.0.0.1:{m.group(1)}"
        server.status_pid = int(m.group(2))
        yield server


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def status(server) -> dict:
    code, _, body = get(server.status_url + "/status")
    assert code == 200
    return json.loads(body)


def eventually(check, timeout: float = 10.0):
    """Retry `check` (a function returning a true value) until it does or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def app_get(server, path: str) -> int:
    return get(server.url + path)[0]


def interpreter_facts() -> list[str]:
    """What the server's interpreter says of itself: implementation, Python version,
    and PyPy's own release (empty on CPython)."""
    code = ("import platform, sys; print(platform.python_implementation()); "
            "print(platform.python_version()); "
            "print('.'.join(map(str, getattr(sys, 'pypy_version_info', ())[:3])))")
    done = subprocess.run([SERVER_PYTHON, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split("\n")[:3]


def expected_runtime() -> str:
    implementation, version, pypy_release = interpreter_facts()
    if implementation == "PyPy":
        return f"PyPy {pypy_release} (Python {'.'.join(version.split('.')[:2])})"
    return f"{implementation} {version}"


# /status ----------------------------------------------------------------------------------
def test_status_keys_and_roles(model):
    with status_server(model) as server:
        report = status(server)
        assert KEYS <= report.keys()
        assert report["model"] == model and report["lesson"] is None
        assert report["app"] == "testapp:app"
        assert report["pid"] == server.pid
        assert report["hostname"] == socket.gethostname()
        main, *rest = report["processes"]
        assert main["pid"] == server.pid and main["role"] == MAIN_ROLE.get(model, "server")
        assert rest[-1] == {**rest[-1], "pid": server.status_pid, "role": "status"}
        for process in report["processes"]:
            assert PROCESS_KEYS <= process.keys()
            assert process["rss_bytes"] > 0 and process["state"] in "RSD"
        if model in ("prefork", "evloop"):
            assert [p["role"] for p in rest[:-1]] == ["worker", "worker"]


def test_status_names_the_runtime():
    """/status says which interpreter serves: "CPython 3.11.7", "PyPy 7.3.11 (Python 3.9)"."""
    runtime = expected_runtime()
    assert re.fullmatch(r"CPython 3\.\d+\.\d+\S*|PyPy \d+\.\d+\.\d+ \(Python 3\.\d+\)", runtime)
    with status_server("evloop") as server:
        assert status(server)["runtime"] == runtime


def test_requests_total_grows_by_exactly_n(model):
    with status_server(model) as server:
        before = status(server)
        for _ in range(7):
            assert app_get(server, "/hello") == 200
        assert app_get(server, "/no-such-route") == 404
        want = before["requests_total"] + 8
        after = eventually(lambda: (r := status(server))["requests_total"] == want and r)
        assert after, f"requests_total never reached {want}: {status(server)}"
        assert after["responses_4xx"] == before["responses_4xx"] + 1
        assert after["responses_5xx"] == before["responses_5xx"]
        time.sleep(0.2)  # the status requests themselves are not counted
        assert status(server)["requests_total"] == want
        assert sum(p["requests"] for p in after["processes"]) <= want


def test_fds_limits_children_match_proc(model):
    def lower_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (345, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))

    with status_server(model, preexec_fn=lower_nofile) as server:
        report = eventually(lambda: (r := status(server))["open_fds"] == open_fds(server.pid)
                            and r)
        assert report, (status(server)["open_fds"], open_fds(server.pid))
        assert report["nofile_limit"] == 345
        assert report["nproc_limit"] == proc_limit(server.pid, "Max processes")
        children = [c for c in children_of(server.pid) if c != server.status_pid]
        assert server.status_pid in children_of(server.pid)
        assert report["children"] == len(children)
        assert report["zombies"] == len(zombies_of(server.pid)) == 0
        assert {p["pid"] for p in report["processes"]} == \
            {server.pid, server.status_pid, *children}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, read from /proc here (not through wizgy)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_cpu_seconds_follow_the_work_done():
    """The live view's CPU % comes from two reports' cpu_seconds: they must be the
    process's own utime + stime, growing as it serves."""
    with status_server("threaded") as server:
        before = status(server)["processes"][0]
        assert before["pid"] == server.pid and before["cpu_seconds"] <= cpu_seconds(server.pid)
        deadline = time.monotonic() + 30  # bounded: at most 30 s of requests
        while cpu_seconds(server.pid) < before["cpu_seconds"] + 0.5:
            assert app_get(server, "/stream?n=5000") == 200
            assert time.monotonic() < deadline, "the server never used 0.5 s of CPU"
        after = status(server)["processes"][0]
        assert before["cpu_seconds"] + 0.5 <= after["cpu_seconds"] <= cpu_seconds(server.pid)
        code, _, metrics = get(server.status_url + "/metrics")
        assert re.search(rf'^wizgy_process_cpu_seconds_total{{pid="{server.pid}",'
                         rf'role="server",state="[RS]"}} [0-9.]+$', metrics.decode(), re.M)


def proc_limit(pid: int, name: str) -> int | None:
    text = Path(f"/proc/{pid}/limits").read_text()
    value = re.search(rf"^{name}\s+(\S+)", text, re.MULTILINE).group(1)
    return None if value == "unlimited" else int(value)


def test_zombies_match_proc_under_no_reap():
    with status_server("fork", "--lesson", "no-reap", "--graceful-timeout", "1") as server:
        for _ in range(3):
            assert app_get(server, "/hello") == 200
        assert eventually(lambda: len(zombies_of(server.pid)) >= 3)
        report = eventually(lambda: (r := status(server))["zombies"] ==
                            len(zombies_of(server.pid)) and r)
        assert report and report["lesson"] == "no-reap"
        zombies = [p for p in report["processes"] if p["state"] == "Z"]
        assert len(zombies) == report["zombies"] >= 3
        assert all(p["role"] == "child" for p in zombies)


# /metrics ---------------------------------------------------------------------------------
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r',?)*\})? (-?[0-9.e+]+|[+-]Inf|NaN)')


def parse_metrics(text: str) -> dict[str, list[tuple[str, float]]]:
    """A strict reader of the Prometheus text format (0.0.4): every line a comment
    (HELP/TYPE before the samples of that name) or a sample; returns name -> samples."""
    samples: dict[str, list] = {}
    typed: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge") and name not in samples
            typed.add(name)
        elif line.startswith("# HELP "):
            continue
        else:
            m = SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            assert m.group(1) in typed, f"{m.group(1)} has no TYPE line before it"
            samples.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return samples


def test_metrics_is_prometheus_text():
    with status_server("threaded") as server:
        assert app_get(server, "/hello") == 200
        eventually(lambda: status(server)["requests_total"] == 1)
        code, headers, body = get(server.status_url + "/metrics")
        assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        metrics = parse_metrics(body.decode())
        report = status(server)
        for key, name in [("requests_total", "wizgy_requests_total"),
                          ("responses_4xx", "wizgy_responses_4xx_total"),
                          ("zombies", "wizgy_zombies"), ("children", "wizgy_children"),
                          ("nofile_limit", "wizgy_nofile_limit"),
                          ("fork_failures", "wizgy_fork_failures_total"),
                          ("emfile_events", "wizgy_emfile_events_total"),
                          ("connections_active", "wizgy_connections_active")]:
            assert metrics[name] == [("", float(report[key]))], name
        assert 'model="threaded"' in metrics["wizgy_info"][0][0]
        assert f'runtime="{expected_runtime()}"' in metrics["wizgy_info"][0][0]
        roles = [labels for labels, _ in metrics["wizgy_process_open_fds"]]
        assert any('role="server"' in labels for labels in roles)


def test_http_details():
    with status_server("iterative") as server:
        _, headers, _ = get(server.status_url + "/status")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Connection"] == "close"
        assert get(server.status_url + "/nope")[0] == 404
        request = urllib.request.Request(server.status_url + "/status", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code == 405
        # a silent client is dropped after a while; the next one is served meanwhile
        port = int(server.status_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.1)
        assert status(server)["pid"] == server.pid


def test_status_bind_in_use_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [SERVER_PYTHON, "-m", "wizgy", "-b", "127.0.0.1:0", "--status-bind",
             f"127.0.0.1:{port}", "testapp:app"], cwd=TEST_APPS, capture_output=True,
            text=True, timeout=20, check=False, env={**os.environ, "PYTHONPATH": f"{SERVER}:{TEST_APPS}"})
    assert proc.returncode == 2 and "cannot bind" in proc.stderr


# the status process -----------------------------------------------------------------------
def listening_inode(port: int) -> str:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on {port}")


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                out.add(link[8:-1])
    return out


def gone(pid: int) -> bool:
    return proc_state(pid) in ("Z", None)  # exited, or reaped by whoever adopted it


def test_status_process_holds_no_app_listener_and_ends_with_the_server():
    with status_server("threaded") as server:
        app_listener = listening_inode(server.port)
        assert app_listener in socket_inodes(server.pid)
        # (the status process closes its copy just after the fork: a loaded machine may
        # not have run it yet when the main process logs "Status at")
        assert eventually(lambda: app_listener not in socket_inodes(server.status_pid))
        assert server.stop() == 0  # SIGTERM: the server ends and reaps it
        assert not Path(f"/proc/{server.status_pid}").exists()
        assert "Traceback" not in server.output()


def test_status_process_exits_when_the_server_is_killed():
    with status_server("iterative") as server:
        os.kill(server.pid, signal.SIGKILL)
        assert eventually(lambda: gone(server.status_pid), timeout=3)


def test_status_process_ignores_signals_meant_for_the_group():
    with status_server("threaded") as server:
        os.kill(server.status_pid, signal.SIGINT)
        os.kill(server.status_pid, signal.SIGHUP)
        time.sleep(0.2)
        assert status(server)["status_pid"] == server.status_pid


def test_events_record_status_start():
    with status_server("threaded") as server:
        events = status(server)["events"]
        assert events[0]["event"] == "status started"
        assert events[0]["pid"] == server.status_pid and events[0]["time"] > 0


def test_status_off_by_default():
    with run_wizgy("-k", "threaded", "testapp:app") as server:
        assert app_get(server, "/hello") == 200
        assert children_of(server.pid) == []
        assert "Status at" not in server.output()


# wizgy top ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["-m", "wizgy", "top"], ["-m", "wizgy.top"]])
def test_top_once_prints_a_frame(command):
    with status_server("threaded") as server:
        proc = subprocess.run([SERVER_PYTHON, *command, "--once", "--url", server.status_url],
                              capture_output=True, text=True, timeout=20,
                              check=False, env={**os.environ, "PYTHONPATH": str(SERVER)})
        assert proc.returncode == 0, proc.stderr
        assert "model threaded" in proc.stdout
        assert f"runtime {expected_runtime()}  " in proc.stdout
        assert f"pid {server.pid}" in proc.stdout
        assert re.search(rf"^\s*{server.status_pid}\s+status\s", proc.stdout, re.MULTILINE)
        assert "\x1b[" not in proc.stdout  # no escapes when not live


def test_top_once_reports_an_unreachable_server():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proc = subprocess.run([SERVER_PYTHON, "-m", "wizgy.top", "--once", "--url",
                           f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=20, check=False, env={**os.environ, "PYTHONPATH": str(SERVER)})
    assert proc.returncode == 1 and "cannot read" in proc.stderr


# the live view (nginx/html/wizgy/) in a real browser ------------------------------------------
LIVE_VIEW = SERVER.parent / "nginx" / "html"
BROWSER = LIVE_VIEW / "wizgy" / "tests" / "browser.mjs"
ARTIFACTS = Path(os.environ.get("ARTIFACTS", SERVER.parent / "test-artifacts"))


@contextlib.contextmanager
def static_files(root: Path):
    """nginx's part, played by http.server: the live view's files on a free port."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_live_view_shows_what_proc_shows():
    require_tool("chromium", "node")
    with status_server("fork", "--lesson", "no-reap", "--graceful-timeout", "1") as server, \
            static_files(LIVE_VIEW) as site:
        for _ in range(4):
            assert app_get(server, "/hello") == 200
        assert eventually(lambda: len(zombies_of(server.pid)) == 4)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-view-no-reap.png"
        page = f"{site}/wizgy/?status={server.status_url}/status"
        proc = subprocess.run(["node", "--experimental-websocket", str(BROWSER), page,
                               "--wait", "3", "--screenshot", str(shot)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        shown = json.loads(proc.stdout)
        assert shown["error"] is None
        assert (shown["model"], shown["lesson"]) == ("fork", "no-reap")
        assert shown["runtime"] == expected_runtime() == status(server)["runtime"]
        assert shown["numbers"]["zombies"] == "4" == str(len(zombies_of(server.pid)))
        assert shown["numbers"]["requests"] == "4"
        assert re.fullmatch(r"\d+%", shown["numbers"]["worker CPU"]), shown["numbers"]
        assert shown["totalsLabel"] == "all 1 replica"
        assert shown["totals"]["zombies"] == "4" and shown["totals"]["5xx/s"] == "0.0"
        assert "CPU (% of one core)" in shown["charts"]
        nofile = proc_limit(server.pid, "Max open files")
        assert shown["numbers"]["open fds"] == f"{open_fds(server.pid)} / {nofile}"
        rows = {int(cells[0]): cells for cells in shown["rows"]}
        assert rows.keys() == {server.pid, server.status_pid, *children_of(server.pid)}
        assert rows[server.pid][1] == "parent"
        assert sorted(pid for pid, cells in rows.items() if cells[2] == "Z") == \
            sorted(zombies_of(server.pid))
        assert shot.stat().st_size > 10_000


def test_live_view_unit_tests():
    """nginx/html/wizgy/tests/*.test.mjs (the page's data handling), run by node."""
    require_tool("node")
    proc = subprocess.run(["node", "--test", str(LIVE_VIEW / "wizgy" / "tests")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# events: the pipe every server process may write to -----------------------------------------
def test_events_from_a_child_process_reach_the_log():
    from wizgy import events

    pipe = events.EventPipe()
    log = events.EventLog(pipe.read_fd)
    pid = os.fork()
    if pid == 0:
        try:
            pipe.send("worker started", pid=os.getpid(), slot=3)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    pipe.send("signal received", signal="SIGHUP")
    log.pump()
    first, second = log.recent()
    assert first["event"] == "worker started" and first["pid"] == pid and first["slot"] == 3
    assert second == {**second, "event": "signal received", "signal": "SIGHUP",
                      "pid": os.getpid()}
    pipe.close_writer()
    pipe.close_reader()


def test_events_never_block_or_raise():
    from wizgy import events

    pipe = events.EventPipe()
    started = time.monotonic()
    for i in range(20_000):  # far more than the pipe holds: the rest are dropped
        pipe.send("fork failed", n=i, text="x" * 5000)  # over MAX_LINE: truncated
    assert time.monotonic() - started < 5
    log = events.EventLog(pipe.read_fd, size=10)
    log.pump()
    assert len(log.recent()) == 10 and log.recent()[-1]["truncated"] is True
    pipe.close_reader()
    pipe.send("after the reader left")  # EPIPE: dropped, no exception
    pipe.close_writer()
    pipe.send("after close")
    assert events.discard("anything", pid=1) is None
