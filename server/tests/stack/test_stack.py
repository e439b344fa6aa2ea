"""The workshop stack end to end: nginx -> wizgy -> each app, Locust, ulimits, lessons.

Each test brings up its own compose project (see conftest.py) and removes it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require_tool

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1200)]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "stack"

# The rows the locustfile writes to its CSV (request names), per app.
ROUTES = ["/hello", "/echo", "/stream", "/headers", "/sleep", "/upload", "/static/hello.txt"]
APP_ROUTES = {"flask": ROUTES, "pyramid": ROUTES, "django": [*ROUTES, "/admin/login/"]}

# A client inside the compose network asks /headers through nginx and reports the
# address it has on that network: what the app must see as its client's address.
WHO_AM_I = """
import json, socket, urllib.request
sock = socket.create_connection(("nginx", 8080)); own = sock.getsockname()[0]; sock.close()
with urllib.request.urlopen("http://nginx:8080/headers", timeout=10) as response:
    print(json.dumps({"own": own, "seen": json.load(response)}))
"""


def zombies(stack) -> int:
    """Zombie processes in the server container, counted from /proc."""
    out = stack.exec("server", "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l")
    return int(out.strip())


def lesson_clients(stack, *args: str) -> str:
    """loadtest/lesson_client.py, from the locust image, straight at the server;
    its report (for assertion messages)."""
    result = stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "python3", "locust",
        "/opt/loadtest/lesson_client.py", "--host", "server", "--port", "8000", "--json", *args,
        timeout=180, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("app", ["flask", "pyramid", "django"])
def test_app_through_nginx_under_locust(stack, app):
    stack.up(APP=app)

    status, headers, body = stack.request("GET", "/hello")
    assert status == 200 and body.startswith(b"Hello, World!"), (status, body)
    assert headers.get("X-Upstream-Addr", "").endswith(":8000"), headers
    status, _, body = stack.request("GET", "/")
    assert status == 200 and b"/wizgy/status" in body  # the landing page
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.locust_port}/", timeout=10) as ui:
        assert ui.status == 200 and b"locust" in ui.read().lower()

    rows = stack.locust(ARTIFACTS / f"locust-{app}", users=20, run_time="25s", APP=app)
    by_name = {row["Name"]: row for row in rows}
    for route in APP_ROUTES[app]:
        assert route in by_name and int(by_name[route]["Request Count"]) > 0, (route, rows)
    total = by_name["Aggregated"]
    assert int(total["Failure Count"]) == 0, total

    who = json.loads(stack.run_python("locust", WHO_AM_I))
    seen = who["seen"]
    assert seen["remote_addr"] == who["own"], who  # X-Forwarded-For, from nginx only
    assert seen["scheme"] == "http", who
    forwarded = {name.lower(): value for name, value in seen["headers"].items()}
    assert forwarded["x-forwarded-for"] == who["own"], who


def test_server_status_through_nginx(stack):
    stack.up("server", "nginx")
    status = stack.get_json("/wizgy/status")
    for key in ("model", "lesson", "children", "zombies", "open_fds", "nofile_limit"):
        assert key in status, status
    assert status["model"] == "prefork" and status["nofile_limit"] == 1024, status
    assert status["threads"] == 4, status  # the image's default for prefork
    # RUNTIME=pypy make test-stack: the image's server runs on PyPy (server/Dockerfile)
    runtime = {"cpython": "CPython 3.", "pypy": "PyPy 7."}[os.environ.get("RUNTIME", "cpython")]
    assert status["runtime"].startswith(runtime), status["runtime"]
    code, _, metrics = stack.request("GET", "/wizgy/metrics")
    assert code == 200 and metrics.strip(), metrics[:300]


def test_ulimits_in_the_server_container(stack):
    stack.up("server", SERVER_NOFILE="300", SERVER_NPROC="150", SERVER_PIDS_LIMIT="400")
    # In the server's own process, and in a shell beside it.
    assert stack.exec("server", "ulimit -n; ulimit -u").split() == ["300", "150"]
    wizgy_limits = stack.exec(
        "server",
        "grep -E 'Max (open files|processes)' /proc/$(pgrep -o -u wizgy -f bin/wizgy)/limits",
    )
    assert "300" in wizgy_limits and "150" in wizgy_limits, wizgy_limits
    assert stack.exec("server", "id -u; id -un").split() == ["10001", "wizgy"]


def test_reap_once_leaves_zombies_and_the_fork_model_does_not(stack):
    # The lesson: 128 children exit together, SIGCHLDs coalesce, wait() once each.
    stack.up("server", WIZGY_MODEL="fork", WIZGY_LESSON="reap-once")
    report = lesson_clients(stack, "--max-clients", "128", "--timeout", "60")
    time.sleep(2)
    left = zombies(stack)
    assert left > 0, (report, left)

    # The correct fork model under the same burst: none left.
    stack.up("server", WIZGY_MODEL="fork", WIZGY_LESSON="")
    report = lesson_clients(stack, "--max-clients", "128", "--timeout", "60")
    time.sleep(2)
    assert zombies(stack) == 0, report


def test_scaled_servers_both_get_requests(stack):
    stack.up("server", "nginx", scale={"server": 2})
    replicas = stack.compose("ps", "-q", "server").stdout.split()
    assert len(replicas) == 2
    upstreams: set[str] = set()
    deadline = time.monotonic() + 30  # nginx re-resolves `server` every 2 s
    while len(upstreams) < 2 and time.monotonic() < deadline:
        status, headers, _ = stack.request("GET", "/hello")
        assert status == 200
        upstreams.add(headers["X-Upstream-Addr"])
        time.sleep(0.05)
    assert len(upstreams) == 2, upstreams


# From the locust container: slow clients dribbling a header byte a second, first
# straight at sync workers (WORKERS of them hold every worker), then at nginx (500 of
# them), each time while an ordinary client asks for /hello.
SLOW_CLIENTS = """
import json, socket, threading, time, urllib.request
WORKERS = 2  # as the test starts the server

def dribblers(host, port, count):
    socks = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
    stop = threading.Event()
    def dribble():
        head = b"GET /hello HTTP/1.1\\r\\nHost: t\\r\\nX-Slow: " + b"a" * 60
        for i in range(len(head)):
            for sock in socks:
                try:
                    sock.send(head[i:i + 1])
                except OSError:
                    pass
            if stop.wait(1.0):
                return
    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    time.sleep(1.5)  # every slow client has begun its head
    return socks, stop

def timed_get(url, timeout):
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            ok = response.status == 200 and response.read().startswith(b"Hello, World!")
    except OSError:
        ok = False
    return ok, time.monotonic() - started

report = {}
socks, stop = dribblers("server", 8000, WORKERS)
report["direct_ok"], report["direct_s"] = timed_get("http://server:8000/hello", 3)
stop.set()
for sock in socks:
    sock.close()
time.sleep(1)
socks, stop = dribblers("nginx", 8080, 500)
times = []
ok = 0
for _ in range(100):
    good, took = timed_get("http://nginx:8080/hello", 10)
    ok += good
    times.append(took)
stop.set()
for sock in socks:
    sock.close()
times.sort()
report["nginx_ok"], report["nginx_p99_ms"] = ok, times[98] * 1000
print(json.dumps(report))
"""


def test_nginx_shields_sync_workers_from_slow_clients(stack):
    """Sync workers give each connection a whole worker: two slow clients straight at
    the server stop it. Behind nginx, which reads a client's whole head before it
    opens an upstream request, 500 of them change nothing for anyone else."""
    stack.up("server", "nginx", WIZGY_MODEL="sync", WIZGY_WORKERS="2")
    status = stack.get_json("/wizgy/status")
    assert status["threads"] == 1, status  # sync: single-threaded workers
    report = json.loads(stack.run_python("locust", SLOW_CLIENTS))
    print("slow clients:", report)
    assert report["direct_ok"] is False and report["direct_s"] >= 2.9, report
    assert report["nginx_ok"] == 100, report
    assert report["nginx_p99_ms"] < 100, report


BROWSER = Path(__file__).resolve().parents[3] / "nginx" / "html" / "wizgy" / "tests" / \
    "browser.mjs"


def live_view(stack, shot: Path, wait: float = 4) -> dict:
    """The live view through nginx, in headless Chromium: what the page shows."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = f"http://127.0.0.1:{stack.nginx_port}/wizgy/"
    proc = subprocess.run(["node", "--experimental-websocket", str(BROWSER), page,
                           "--wait", str(wait), "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = json.loads(proc.stdout)
    assert shown["error"] is None, shown
    return shown


def test_live_view_through_nginx_follows_a_lesson(stack):
    require_tool("chromium", "node")
    stack.up("server", "nginx", WIZGY_MODEL="fork", WIZGY_LESSON="")
    before = live_view(stack, ARTIFACTS / "live-view-fork.png")
    assert (before["model"], before["numbers"]["zombies"]) == ("fork", "0"), before

    # Switch to the no-reap lesson: every connection leaves a zombie behind.
    stack.up("server", "nginx", WIZGY_MODEL="fork", WIZGY_LESSON="no-reap")
    lesson_clients(stack, "--max-clients", "12", "--timeout", "60")
    time.sleep(2)
    shot = ARTIFACTS / "live-view-no-reap.png"
    after = live_view(stack, shot)
    status = stack.get_json("/wizgy/status")
    assert (after["model"], after["lesson"]) == ("fork", "no-reap"), after
    assert int(after["numbers"]["zombies"]) == status["zombies"] == zombies(stack) >= 12
    assert after["numbers"]["open fds"].endswith(f"/ {status['nofile_limit']}")
    assert shot.stat().st_size > 10_000


def every_replica_status(stack, replicas: int) -> dict[str, dict]:
    """/wizgy/status of each replica (nginx sends each request to one), by hostname."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while len(seen) < replicas and time.monotonic() < deadline:
        report = stack.get_json("/wizgy/status")
        seen[report["hostname"]] = report
    assert len(seen) == replicas, seen.keys()
    return seen


def test_live_view_adds_up_replicas_and_tells_4xx_from_5xx(stack):
    require_tool("chromium", "node")
    stack.up("server", "nginx", scale={"server": 2})
    every_replica_status(stack, 2)  # both answer before the page starts polling
    code, headers, body = stack.request("GET", "/favicon.ico")
    assert code == 200 and body[:4] == b"\0\0\1\0", (code, body[:16])  # an ICO file
    assert "icon" in headers["Content-Type"], headers

    # 404s from the app while the page polls: the error chart must call them 4xx.
    sent, stop = [], threading.Event()

    def not_found() -> None:
        while not stop.is_set():
            sent.append(stack.request("GET", "/no-such-page")[0])
            time.sleep(0.05)

    thread = threading.Thread(target=not_found)
    thread.start()
    try:
        shown = live_view(stack, ARTIFACTS / "live-view-replicas.png", wait=8)
    finally:
        stop.set()
        thread.join()
    assert sent and set(sent) == {404}, sent
    assert shown["totalsLabel"] == "all 2 replicas", shown
    legend = shown["charts"]["Errors (% of requests)"]
    five, four = (float(v) for v in re.findall(r"xx \((?:server|client)\) ([0-9.]+)%", legend))
    assert five == 0 and four > 0, legend  # 5xx first in the legend, then 4xx

    reports = every_replica_status(stack, 2)
    assert int(shown["totals"]["children"]) == sum(r["children"] for r in reports.values())
    assert shown["totals"]["zombies"] == "0"
    # Every 4xx the replicas counted is one of ours: the browser's /favicon.ico (and the
    # page's own files) never reached the app.
    assert sum(r["responses_4xx"] for r in reports.values()) == len(sent), reports
    assert sum(r["responses_5xx"] for r in reports.values()) == 0
