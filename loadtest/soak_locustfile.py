"""Locust users for the fault tests (server/tests/test_faults.py) and the soak
(loadtest/soak.py), against the test app or the Flask app. Pick one on the command line:

    locust -f loadtest/soak_locustfile.py --headless -u 9 -r 9 -t 10s \
        --host http://127.0.0.1:8000 SleepUser

  SleepUser   /sleep?s=WIZGY_SLEEP back to back: every user always has one request in
              flight, so a killed worker's share of them is easy to count
  QuickUser   /hello, /pid and a small /echo, back to back (test app or Flask app)
  MixedUser   every Flask app route with its answer checked (the soak's load)

Environment:
  WIZGY_SLEEP=0.5   seconds each /sleep asks for
  WIZGY_CLOSE=1     send `Connection: close` on every request (iterative serves one
                    connection at a time: a keep-alive user would hold it)

Unlike locustfile.py (the workshop's), nothing here waits between requests for long:
the point is steady pressure whose failures can be counted.
"""

import hashlib
import os
import random

from locust import HttpUser, between, constant, task

SLEEP_SECONDS = float(os.environ.get("WIZGY_SLEEP", "0.5"))
HEADERS = {"Connection": "close"} if os.environ.get("WIZGY_CLOSE") == "1" else {}
ECHO_BODY = os.urandom(16 * 1024)
UPLOAD_BODY = os.urandom(64 * 1024)
STREAM_CHUNKS = 50
EXPECTED_STREAM = "".join(f"chunk {i}\n" for i in range(STREAM_CHUNKS))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_pieces(data: bytes, size: int = 4096):
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def get_hello(client) -> None:
    with client.get("/hello", name="/hello", headers=HEADERS,
                    catch_response=True) as response:
        if response.status_code == 200 and not response.text.startswith("Hello, World!"):
            response.failure(f"unexpected body {response.text[:40]!r}")


class SleepUser(HttpUser):
    wait_time = constant(0)

    @task
    def sleep(self):
        self.client.get(f"/sleep?s={SLEEP_SECONDS}", name="/sleep", headers=HEADERS)


class QuickUser(HttpUser):
    wait_time = constant(0.02)

    @task(4)
    def hello(self):
        get_hello(self.client)

    @task(2)
    def pid(self):
        with self.client.get("/pid", name="/pid", headers=HEADERS,
                             catch_response=True) as response:
            if response.status_code == 200 and not response.text.strip().isdigit():
                response.failure(f"unexpected body {response.text[:40]!r}")

    @task(2)
    def echo(self):
        with self.client.post("/echo", data=ECHO_BODY, name="/echo", headers=HEADERS,
                              catch_response=True) as response:
            if response.status_code == 200 and response.json().get("sha256") != sha256(ECHO_BODY):
                response.failure(f"echo mismatch: {response.text[:80]!r}")


class MixedUser(HttpUser):
    """The Flask app's routes (apps/flaskapp.py), mostly the cheap ones."""

    wait_time = between(0.05, 0.3)

    @task(10)
    def hello(self):
        get_hello(self.client)

    @task(4)
    def echo(self):
        body = ECHO_BODY if random.random() < 0.5 else in_pieces(ECHO_BODY)
        with self.client.post("/echo", data=body, name="/echo", headers=HEADERS,
                              catch_response=True) as response:
            expected = {"length": len(ECHO_BODY), "sha256": sha256(ECHO_BODY)}
            if response.status_code == 200 and response.json() != expected:
                response.failure(f"echo mismatch: {response.text[:80]!r}")

    @task(3)
    def stream(self):
        with self.client.get(f"/stream?n={STREAM_CHUNKS}", name="/stream", headers=HEADERS,
                             catch_response=True) as response:
            if response.status_code == 200 and response.text != EXPECTED_STREAM:
                response.failure(f"stream cut short at {len(response.text)} bytes")

    @task(3)
    def headers(self):
        with self.client.get("/headers", name="/headers",
                             headers={**HEADERS, "X-Soak": "locust"},
                             catch_response=True) as response:
            if response.status_code == 200 and response.json()["headers"].get("X-Soak") != "locust":
                response.failure("request header lost on the way")

    @task(1)
    def sleep(self):
        self.client.get("/sleep?s=0.05", name="/sleep", headers=HEADERS)

    @task(2)
    def upload(self):
        files = {"file": ("soak.bin", UPLOAD_BODY, "application/octet-stream")}
        with self.client.post("/upload", files=files, name="/upload", headers=HEADERS,
                              catch_response=True) as response:
            expected = {"filename": "soak.bin", "size": len(UPLOAD_BODY),
                        "sha256": sha256(UPLOAD_BODY)}
            if response.status_code == 200 and response.json() != expected:
                response.failure(f"upload mismatch: {response.text[:80]!r}")

    @task(3)
    def static(self):
        self.client.get("/static/hello.txt", name="/static/hello.txt", headers=HEADERS)
