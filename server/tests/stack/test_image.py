"""The server image alone, as a plain `docker run` starts it: no init, wizgy is PID 1.

On PyPy, wizgy puts its --pypy-gc parameters in the environment as PYPY_GC_* and execs
itself in place at startup (cli.tune_gc), so in this container the exec replaces PID 1.
The container must still start wizgy once, answer, pass the image's HEALTHCHECK and
stop gracefully on `docker stop` (SIGTERM to PID 1). On CPython there is no exec and
no collector line. (The compose stack runs docker-init as PID 1: test_stack.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

HELLO = """
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:8000/hello", timeout=10).read().decode())
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], check=False, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def logs(name: str) -> str:
    """The container's output: the entrypoint's and wizgy's lines are on stderr."""
    result = docker("logs", name)
    return result.stdout + result.stderr


def state(name: str) -> dict:
    return json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)


def wait_healthy(name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (now := state(name)).get("Health", {}).get("Status") != "healthy":
        assert now["Running"] and time.monotonic() < deadline, (now, logs(name))
        time.sleep(0.5)


def test_image_runs_wizgy_as_pid_1_and_stops_it_gracefully(stack):
    image = stack.compose("config", "--images", "server").stdout.strip()
    name = f"{stack.name}-pid1"
    # The project's label lets conftest's cleanup find the container if this run dies.
    label = f"com.docker.compose.project={stack.name}"
    docker("run", "-d", "--init=false", "--name", name, "-e", "APP=flask", "--label", label,
           image)
    try:
        wait_healthy(name)
        pid_1 = docker("exec", name, "cat", "/proc/1/comm").stdout  # wizgy names it
        assert pid_1 == "wizgy master\n", pid_1
        hello = docker("exec", name, "python3", "-c", HELLO).stdout
        assert hello == "Hello, World! from Flask\n\n", hello

        started = logs(name)
        assert started.count("Listening at: http://0.0.0.0:8000 (1)") == 1, started
        if os.environ.get("RUNTIME") == "pypy":  # one exec: the line once, the default
            assert started.count("PyPy's collector: ") == 1, started
            assert "PyPy's collector: PYPY_GC_INCREMENT_STEP=256K, PYPY_GC_NURSERY=4M\n" \
                in started, started
            environ = docker("exec", name, "cat", "/proc/1/environ").stdout.split("\0")
            assert {"PYPY_GC_INCREMENT_STEP=256K", "PYPY_GC_NURSERY=4M"} <= set(environ), \
                environ
        else:
            assert "PyPy's collector" not in started, started

        docker("stop", "-t", "20", name)
        stopped, ended = logs(name), state(name)
        assert ended["ExitCode"] == 0, (ended, stopped)
        assert "Handling signal: term" in stopped, stopped
        assert stopped.rstrip().endswith("Shutting down: done"), stopped
    finally:
        docker("rm", "-f", name, check=False)


SLOW_DJANGOAPP = """
# Stands in for the workshop's djangoapp, which sets Django up and migrates (seconds
# on a slow machine): the entrypoint's django-admin-user imports it before wizgy runs.
import time
time.sleep(120)
"""


def test_a_stop_signal_while_the_entrypoint_prepares_django_stops_the_start(stack, tmp_path):
    """APP=django: before it execs wizgy, the entrypoint (bash, PID 1 in a plain
    `docker run`) runs django-admin-user. The kernel drops a TERM that PID 1 has no
    handler for, and bash runs a trap only once a foreground child has finished: the
    TERM must end the start there, not wait out docker stop's timeout and a SIGKILL
    (exit 137)."""
    image = stack.compose("config", "--images", "server").stdout.strip()
    name = f"{stack.name}-pid1-django"
    label = f"com.docker.compose.project={stack.name}"
    apps = tmp_path / "slow"
    apps.mkdir(mode=0o755)
    (apps / "djangoapp.py").write_text(SLOW_DJANGOAPP)
    (apps / "djangoapp.py").chmod(0o644)
    docker("create", "--init=false", "--name", name, "-e", "APP=django", "-e",
           "WIZGY_CHDIR=/tmp/slow", "--label", label, image)
    try:
        docker("cp", str(apps), f"{name}:/tmp/slow")
        docker("start", name)
        deadline = time.monotonic() + 60
        while "django-admin-user" not in docker("top", name, "-eo", "pid,args").stdout:
            assert state(name)["Running"] and time.monotonic() < deadline, logs(name)
            time.sleep(0.2)
        docker("stop", "-t", "20", name)
        stopped, ended = logs(name), state(name)
        assert ended["ExitCode"] == 0, (ended, stopped)
        assert "entrypoint: stopped while starting: a stop signal came before the server " \
               "served\n" in stopped, stopped
        assert "Listening at" not in stopped, stopped
    finally:
        docker("rm", "-f", name, check=False)
