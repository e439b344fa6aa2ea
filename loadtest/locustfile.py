"""Locust load for the workshop: every route of the apps, one CSV row per route.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 30s

Environment:
  APP=django            also browse Django's admin login page (the other apps have none)
  WIZGY_SHAPE=workshop  drive users with the workshop ramp below instead of -u/-r/-t
  WIZGY_SHAPE_SCALE=0.1 shrink (or stretch) the ramp's stage durations
  WIZGY_SLEEP=0.2       seconds each /sleep request asks the app to block

Every response is checked (status and body), so a server that answers wrongly
shows up as a failure, not just a slow one.
"""

import hashlib
import os
import random

from locust import HttpUser, LoadTestShape, between, task

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


class AppUser(HttpUser):
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


class DjangoAdminUser(HttpUser):
    """Someone opening Django's admin login page; only when APP=django."""

    abstract = os.environ.get("APP") != "django"
    weight = 1
    wait_time = between(1.0, 3.0)

    @task
    def admin_login(self):
        with self.client.get(
            "/admin/login/", name="/admin/login/", catch_response=True
        ) as response:
            if response.ok and "csrfmiddlewaretoken" not in response.text:
                response.failure("no login form")


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
