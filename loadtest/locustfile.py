"""Locust load for the workshop: every route of the apps, one CSV row per route.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 20 -r 5 -t 30s
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --class-picker  # pick in the UI

Two kinds of user (in the web UI's class picker, or named at the end of the command line;
LOCUST_USER_CLASSES, set to AppUser in the Locust image, is the default there):
  AppUser     a visitor browsing every route, 0.5-2 s between requests: a live demo
  HammerUser  FastHttpUser with no wait: /hello, /stream and /echo as fast as the
              server answers (`make stress`): the server, not the users, sets the pace

Which app runs is learnt from the server, not configured: the /wizgy/status report
nginx serves names it (`app`), read at most every STATUS_EVERY seconds, so a swarm
keeps going across `make app-django` and starts opening Django's admin page.

Environment:
  WIZGY_TARGET          this process's users load this URL, whatever host the master
                        says (a worker on another machine, where "nginx" means nothing)
  WIZGY_STATUS_URL      where to read the app from (default: HOST/wizgy/status, nginx's)
  APP=django            what to assume when no status answers (e.g. straight at wizgy)
  WIZGY_SHAPE=workshop  drive users with the workshop ramp below instead of -u/-r/-t
  WIZGY_SHAPE_SCALE=0.1 shrink (or stretch) the ramp's stage durations
  WIZGY_SLEEP=0.2       seconds each /sleep request asks the app to block

Every response is checked (status and body), so a server that answers wrongly
shows up as a failure, not just a slow one.
"""

import hashlib
import json
import logging
import os
import random
import time
import urllib.request

from locust import FastHttpUser, HttpUser, LoadTestShape, between, constant, events, task
from locust.runners import WorkerRunner

STATUS_EVERY = 5.0  # seconds between looks at the server's app
SLEEP_SECONDS = float(os.environ.get("WIZGY_SLEEP", "0.2"))
STREAM_CHUNKS = 200
EXPECTED_STREAM = "".join(f"chunk {i}\n" for i in range(STREAM_CHUNKS))
ECHO_BODY = os.urandom(64 * 1024)
UPLOAD_BODY = os.urandom(256 * 1024)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_pieces(data: bytes, size: int = 8192):
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_status(host: str) -> dict | None:
    """The server's /status report (through nginx unless WIZGY_STATUS_URL), or None."""
    url = os.environ.get("WIZGY_STATUS_URL") or f"{host.rstrip('/')}/wizgy/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            report = json.load(response)
            # the server container that answered (nginx says; straight at wizgy: None)
            report["answered_by"] = upstream_host(response.headers)
            return report
    except (OSError, ValueError, TypeError):  # (TypeError: a report that is no object)
        return None


def upstream_host(headers) -> str | None:
    """The address of the server container nginx took a response from (its
    X-Upstream-Addr, without the port), or None."""
    addr = headers.get("X-Upstream-Addr")
    return addr.rsplit(":", 1)[0] if addr else None


class ServerApp:
    """The app the server behind `host` runs, from its status report; one per process,
    shared by every user (a gevent process: one look at a time, the others read the
    last answer)."""

    def __init__(self) -> None:
        self.app: str | None = os.environ.get("APP")
        self.host: str | None = None  # the server container that said so (via nginx)
        self.checked = float("-inf")
        self.looking = False

    def get(self, host: str) -> str | None:
        if self.looking or time.monotonic() - self.checked < STATUS_EVERY:
            return self.app
        self.looking = True
        try:
            self.app = self.look(host) or self.app
        finally:
            self.checked = time.monotonic()
            self.looking = False
        return self.app

    def look(self, host: str) -> str | None:
        report = read_status(host)
        if report is None:
            return None  # no status here (straight at wizgy) or a restart: keep the last
        app = report.get("app")
        # "flaskapp:app" -> "flask", as APP names it
        name = app.removesuffix("app:app") if app and app.endswith("app:app") else app
        if name != self.app:
            logging.info("the server runs %s", name)
        self.host = report.get("answered_by")
        return name


server_app = ServerApp()
TARGET = os.environ.get("WIZGY_TARGET") or None


class Target:
    """Mixed into the users: WIZGY_TARGET, when set, replaces the master's host for
    the users of this process (set before the HTTP client is made from it)."""

    def __init__(self, environment) -> None:
        if TARGET:
            self.host = TARGET
        super().__init__(environment)


class AppUser(Target, HttpUser):
    """A visitor using every route of the app, mostly the cheap ones."""

    weight = 5
    wait_time = between(0.5, 2.0)

    @task(10)
    def hello(self):
        with self.client.get("/hello", name="/hello", catch_response=True) as response:
            if not response.text.startswith("Hello, World!"):
                response.failure(f"unexpected body {response.text[:40]!r}")

    @task(4)
    def echo(self):
        # Half the bodies go chunked, which only a server that honours
        # wsgi.input_terminated (or a proxy that buffers them) gets right.
        body = ECHO_BODY if random.random() < 0.5 else in_pieces(ECHO_BODY)
        with self.client.post(
            "/echo", data=body, name="/echo", catch_response=True
        ) as response:
            expected = {"length": len(ECHO_BODY), "sha256": sha256(ECHO_BODY)}
            if response.ok and response.json() != expected:
                response.failure(f"echo mismatch: {response.text[:80]!r}")

    @task(3)
    def stream(self):
        url = f"/stream?n={STREAM_CHUNKS}"
        with self.client.get(url, name="/stream", catch_response=True) as response:
            if response.ok and response.text != EXPECTED_STREAM:
                response.failure(f"stream cut short at {len(response.text)} bytes")

    @task(3)
    def headers(self):
        with self.client.get(
            "/headers",
            name="/headers",
            headers={"X-Workshop": "locust"},
            catch_response=True,
        ) as response:
            if response.ok and response.json()["headers"].get("X-Workshop") != "locust":
                response.failure("request header lost on the way")

    @task(2)
    def sleep(self):
        self.client.get(f"/sleep?s={SLEEP_SECONDS}", name="/sleep")

    @task(2)
    def upload(self):
        files = {"file": ("load.bin", UPLOAD_BODY, "application/octet-stream")}
        with self.client.post(
            "/upload", files=files, name="/upload", catch_response=True
        ) as response:
            expected = {
                "filename": "load.bin",
                "size": len(UPLOAD_BODY),
                "sha256": sha256(UPLOAD_BODY),
            }
            if response.ok and response.json() != expected:
                response.failure(f"upload mismatch: {response.text[:80]!r}")

    @task(4)
    def static(self):
        self.client.get("/static/hello.txt", name="/static/hello.txt")

    @task(1)
    def admin_login(self):
        """Django's admin login page, while the server runs Django (the others have none)."""
        if server_app.get(self.host) != "django":
            return
        with self.client.get(
            "/admin/login/", name="/admin/login/", catch_response=True
        ) as response:
            answered_by = upstream_host(response.headers)
            if response.status_code == 404 and server_app.host and answered_by \
                    and answered_by != server_app.host:
                # A switch is under way: the status report came from one server
                # container (the new one, or the old), nginx's pool sent this to the
                # other, which has no admin. Not Django's failure; counted apart.
                response.request_meta["name"] = "/admin/login/ (mid-switch: not Django)"
                response.success()
            elif response.ok and "csrfmiddlewaretoken" not in response.text:
                response.failure("no login form")


# 20 chunks, not AppUser's 200: every chunk crosses nginx unbuffered and costs nginx
# and Locust about what it costs the server, so long streams load everyone but the
# server (measured: 200 chunks gave 255 req/s for the same CPU as 3,700 /hello).
HAMMER_CHUNKS = 20
HAMMER_STREAM = f"/stream?n={HAMMER_CHUNKS}"
HAMMER_EXPECTED = "".join(f"chunk {i}\n" for i in range(HAMMER_CHUNKS))
HAMMER_BODY = os.urandom(4 * 1024)
HAMMER_ECHO = {"length": len(HAMMER_BODY), "sha256": sha256(HAMMER_BODY)}


class HammerUser(Target, FastHttpUser):
    """No wait: each user sends its next request as soon as the last is answered, so
    the server, not the users, sets the pace. Cheap routes, the streamed one and an
    upload; bodies still checked."""

    weight = 1
    wait_time = constant(0)

    @task(6)
    def hello(self):
        with self.client.get("/hello", catch_response=True) as response:
            if not response.text.startswith("Hello, World!"):
                response.failure(f"unexpected body {response.text[:40]!r}")

    @task(2)
    def stream(self):
        with self.client.get(HAMMER_STREAM, name="/stream", catch_response=True) as response:
            if response.ok and response.text != HAMMER_EXPECTED:
                response.failure(f"stream cut short at {len(response.text)} bytes")

    @task(2)
    def echo(self):
        with self.client.post("/echo", data=HAMMER_BODY, catch_response=True) as response:
            if response.ok and response.json() != HAMMER_ECHO:
                response.failure(f"echo mismatch: {response.text[:80]!r}")


# How busy the server was: its workers' CPU between the start and the end of a run,
# from two /status reports (what the live view's CPU chart shows, averaged over the run).
# On the master (or a run without workers) only.
cpu_at_start: dict = {}


@events.test_start.add_listener
def note_server_cpu(environment, **_kwargs) -> None:
    if not isinstance(environment.runner, WorkerRunner) and environment.host:
        cpu_at_start.clear()
        cpu_at_start.update(read_status(environment.host) or {})


@events.test_stop.add_listener
def report_server_cpu(environment, **_kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner) or not cpu_at_start or not environment.host:
        return
    before, after = cpu_at_start, read_status(environment.host) or {}
    used = workers_cpu(before, after)
    if used is None:
        logging.info("server CPU not measured: no prefork workers, or another replica or server answered")
        return
    mean, busiest, count = used
    logging.info("server workers' CPU over the run: %.0f%% of a core each (%d worker%s, "
                 "busiest %.0f%%), %s", 100 * mean, count, "s" * (count != 1), 100 * busiest,
                 after.get("hostname"))


def workers_cpu(before: dict, after: dict) -> tuple[float, float, int] | None:
    """Mean and busiest CPU share of the server's workers between two reports."""
    seconds = after.get("time", 0) - before.get("time", 0)
    if before.get("pid") != after.get("pid") or seconds <= 0:
        return None
    then = {p["pid"]: p.get("cpu_seconds") for p in before.get("processes", [])}
    shares = [(p["cpu_seconds"] - then[p["pid"]]) / seconds for p in after["processes"]
              if p["role"] == "worker" and then.get(p["pid"]) is not None]
    if not shares:
        return None
    return sum(shares) / len(shares), max(shares), len(shares)


class WorkshopShape(LoadTestShape):
    """The workshop ramp: warm up, step up, spike, cool down, stop.

    Enabled with WIZGY_SHAPE=workshop; otherwise -u/-r/-t drive the run.
    """

    abstract = os.environ.get("WIZGY_SHAPE") != "workshop"
    scale = float(os.environ.get("WIZGY_SHAPE_SCALE", "1"))
    # (stage end in seconds, users, spawn rate per second)
    stages = (
        (30, 5, 1),  # warm-up
        (90, 20, 2),  # step up
        (150, 50, 5),  # step up again
        (180, 150, 50),  # spike
        (240, 10, 10),  # cool-down
    )

    def tick(self):
        run_time = self.get_run_time()
        for end, users, spawn_rate in self.stages:
            if run_time < end * self.scale:
                return users, spawn_rate
        return None
