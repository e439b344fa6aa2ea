"""Switching the running server (make app-*, lesson-*, normal, `APP=... make up`)
while the stack's own Locust swarm runs through nginx: no request may fail, and
Locust is never restarted.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

SWARM_SECONDS = 30  # at least this long under load, whatever the switches take


def locust_api(stack, path: str, form: dict | None = None) -> dict:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    url = f"http://127.0.0.1:{stack.locust_port}{path}"
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return json.load(response)


def started_at(stack, service: str) -> str:
    container = stack.compose("ps", "-q", service).stdout.split()
    assert len(container) == 1, container
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", container[0]],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def server_runs(stack) -> dict:
    status = stack.get_json("/wizgy/status")
    return {key: status[key] for key in ("app", "model", "lesson", "nofile_limit")}


def test_switches_under_a_running_swarm_fail_no_request(stack):
    out = stack.make("up")
    assert "model prefork (2 workers x 4 threads), app flaskapp:app" in out, out[-2000:]
    # `make up` returned: a worker is there, so a swarm starts at once.
    assert locust_api(stack, "/worker-count")["worker_count"] >= 1
    locust_started = started_at(stack, "locust")

    swarm = locust_api(
        stack, "/swarm", {"user_count": 20, "spawn_rate": 20, "host": "http://nginx:8080"}
    )
    assert swarm["success"], swarm
    began = time.monotonic()
    time.sleep(3)

    stack.make("app-pyramid")
    assert server_runs(stack)["app"] == "pyramidapp:app"
    out = stack.make("lesson-reap-once")
    assert "back to normal: make normal" in out, out[-2000:]
    assert server_runs(stack) == {
        "app": "pyramidapp:app",
        "model": "fork",
        "lesson": "reap-once",
        "nofile_limit": 1024,
    }
    stack.make("normal")
    assert server_runs(stack) == {
        "app": "flaskapp:app",
        "model": "prefork",
        "lesson": None,
        "nofile_limit": 1024,
    }
    stack.make("up", APP="django")  # another app through `make up`: Locust stays
    assert server_runs(stack)["app"] == "djangoapp:app"
    time.sleep(max(0.0, SWARM_SECONDS - (time.monotonic() - began)))

    report = locust_api(stack, "/stats/requests")
    assert report["state"] == "running" and report["user_count"] == 20, report["state"]
    assert started_at(stack, "locust") == locust_started  # never restarted
    locust_api(stack, "/stop", {})
    rows = {row["name"]: (row["num_requests"], row["num_failures"]) for row in report["stats"]}
    print("switches under load (requests, failures):", rows)
    assert rows["Aggregated"][0] > 200, rows
    assert rows["Aggregated"][1] == 0 and report["errors"] == [], (rows, report["errors"])
    assert len(stack.compose("ps", "-q", "server").stdout.split()) == 1
