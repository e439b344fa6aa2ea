"""Locust in the stack: the app learnt from the server, the hammer (`make stress`), a
worker from outside Compose (`make worker`), and `make clients` judging a lesson.

Each test brings up its own compose project (see conftest.py) and removes it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = "test-artifacts/stack"  # relative: the Makefile puts it under the repository


def make(stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A make target of the repository, run against this test's compose project."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          env=stack.env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def locust(stack, path: str, form: dict | None = None) -> dict:
    """Locust's web API (the master's UI port): GET, or POST a form."""
    data = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else None
    url = f"http://127.0.0.1:{stack.locust_port}{path}"
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return json.load(response)


def stats(stack) -> dict:
    return locust(stack, "/stats/requests")


def stats_or_none(stack) -> dict | None:
    """The stats, or None while the master's web UI is not answering yet."""
    try:
        return stats(stack)
    except OSError:
        return None


def row(report: dict, name: str) -> dict | None:
    return next((r for r in report["stats"] if r["name"] == name), None)


def wait_for(check, what: str, timeout: float = 90):
    """Poll `check` until it returns something true; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s")


def swarm(stack, users: int, user_class: str) -> None:
    answer = locust(stack, "/swarm", {"user_count": users, "spawn_rate": users,
                                      "user_classes": [user_class]})
    assert answer["success"], answer


def test_a_running_swarm_follows_the_server_to_another_app(stack):
    stack.up()
    wait_for(lambda: stats(stack).get("worker_count", 0) >= 1, "a Locust worker connected")
    master = stack.compose("ps", "-q", "locust").stdout.strip()
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.locust_port}/", timeout=10) as ui:
        page = ui.read().decode()
    assert re.search(r'"show_userclass_picker"\s*:\s*true', page), page[-2000:]
    assert '"AppUser"' in page and '"HammerUser"' in page  # the classes offered
    swarm(stack, 8, "AppUser")
    wait_for(lambda: (r := row(stats(stack), "/hello")) and r["num_requests"] > 0,
             "requests from the swarm")
    assert row(stats(stack), "/admin/login/") is None  # Flask has no admin

    stack.up("server", APP="django")  # the server only: Locust is left running
    admin = wait_for(lambda: (r := row(stats(stack), "/admin/login/")) and
                     r["num_requests"] > 0 and r, "the swarm opening Django's admin")
    report = stats(stack)
    assert report["state"] == "running" and report["user_count"] == 8, report["state"]
    assert stack.compose("ps", "-q", "locust").stdout.strip() == master  # not recreated
    assert admin["num_failures"] == 0, admin
    locust(stack, "/stop", {})


def test_make_stress_hammers_through_nginx_with_a_worker_per_process(stack):
    stack.up("server", "nginx", APP="pyramid")
    before = stack.get_json("/wizgy/status")
    assert before["workers"] == 2, before  # the stack's default, which the preset changes
    result = make(stack, "stress", "DURATION=10s", "STRESS_USERS=8", "LOCUST_WORKERS=2",
                  f"ARTIFACTS={ARTIFACTS}", timeout=400)
    out = result.stdout + result.stderr
    (REPO / ARTIFACTS / "stress" / "make-stress.txt").write_text(out)
    assert result.returncode == 0, out[-3000:]
    # The preset's server (one worker, the app kept), switched to before the run and
    # measured by it: the CPU line is about that server's one worker.
    assert "server: model prefork (1 workers x 4 threads), app pyramidapp:app" in out, out
    after = stack.get_json("/wizgy/status")
    assert (after["workers"], after["app"]) == (1, "pyramidapp:app"), after
    # a new container: pids restart in each container's namespace, hostnames do not
    assert after["hostname"] != before["hostname"], (before, after)
    assert "Sending spawn jobs of 8 users at 8.00 spawn rate to 2 ready workers" in out, out
    cpu = re.search(r"server workers' CPU over the run: \d+% of a core each \(1 worker, "
                    r"busiest \d+%\), (\w+)", out)
    assert cpu and cpu[1] == after["hostname"], out[-3000:]
    with open(REPO / ARTIFACTS / "stress" / "stress_stats.csv", newline="") as table:
        rows = {r["Name"]: r for r in csv.DictReader(table)}
    assert {"/hello", "/stream", "/echo"} <= rows.keys(), rows.keys()
    assert all(int(rows[name]["Request Count"]) > 0 for name in ("/hello", "/stream", "/echo"))
    assert rows["Aggregated"]["Failure Count"] == "0", rows["Aggregated"]


def test_a_worker_from_outside_compose_joins_the_master(stack):
    # No worker of the stack's own: every request below comes from the outside one.
    stack.up("server", "nginx")
    # (not --wait for the master: it is healthy only once a worker has joined)
    stack.compose("up", "-d", "locust")  # (its own workers not started)
    wait_for(lambda: stack.compose("port", "locust", "5557", check=False).stdout.strip(),
             "the master's published port")
    published = stack.compose("port", "locust", "5557").stdout.strip()
    assert published.startswith("127.0.0.1:"), published  # not beyond this machine by default
    name = f"{stack.name}-outside-worker"
    log = REPO / ARTIFACTS / "outside-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        worker = subprocess.Popen(
            ["make", "--no-print-directory", "-C", str(REPO), "worker", "MASTER=127.0.0.1",
             f"MASTER_PORT={published.rsplit(':', 1)[1]}", f"WORKER_NAME={name}",
             f"TARGET=http://127.0.0.1:{stack.nginx_port}"],
            env=stack.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        joined = wait_for(lambda: (r := stats_or_none(stack)) and r.get("worker_count") == 1 and r,
                          "the outside worker joining")
        assert joined["workers"][0]["id"].startswith(name), joined["workers"]
        swarm(stack, 4, "AppUser")
        report = wait_for(lambda: (r := stats(stack))["stats"][-1]["num_requests"] >= 20 and r,
                          "requests from the outside worker")
        assert report["worker_count"] == 1 and report["user_count"] == 4
        assert report["stats"][-1]["num_failures"] == 0, report["errors"]
        locust(stack, "/stop", {})
    finally:
        os.killpg(worker.pid, signal.SIGTERM)  # make and the docker client: ours alone
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False,
                       timeout=60)


def test_make_clients_exits_0_when_the_lesson_shows(stack):
    stack.up("server", WIZGY_MODEL="fork", WIZGY_LESSON="reap-once")
    # --wait 20: 128 forked Python children on a busy 2-core machine take their time
    result = make(stack, "clients", "CLIENTS=--max-clients 128 --wait 20 --timeout 90")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "lesson reap-once" in out, out
    assert re.search(r"^expected: zombies > 0 - saw [1-9]\d*$", out, re.M), out
