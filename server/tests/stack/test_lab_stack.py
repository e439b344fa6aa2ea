"""`make lesson-part2` and `make lesson-part1` in the stack: the labs' small servers
behind nginx, in wizgy's place, and back.

The real make targets run against this test's compose project (COMPOSE_PROJECT_NAME
and NGINX_PORT in their environment), so the test follows whatever those targets do.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]


def make(stack, target: str, **env: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target],
        env={**stack.env, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"make {target}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def server_command(stack) -> str:
    return stack.exec("server", "ps -eo args")


def health_log(stack) -> list[dict]:
    container = stack.compose("ps", "-q", "server").stdout.split()[0]
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .State.Health}}", container],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)["Log"]


def test_lessons_part2_and_part1_serve_through_nginx(stack):
    stack.up("server", "nginx", APP="pyramid")
    assert stack.get_json("/wizgy/status")["model"] == "prefork"

    notes = make(stack, "lesson-part2")
    assert "webserver2.py" in notes and "part2-to-wizgy.md" in notes, notes
    assert "webserver2.py -b 0.0.0.0:8000 pyramidapp:app" in server_command(stack)
    assert "bin/wizgy" not in server_command(stack)
    status, _, body = stack.request("GET", "/hello")  # the running app is kept
    assert (status, body) == (200, b"Hello, World! from Pyramid\n")
    status, _, body = stack.request("GET", "/stream?n=3")  # ended by the close, behind nginx
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")

    # No status listener behind nginx: a 503 that says why, not a bare 502.
    status, headers, body = stack.request("GET", "/wizgy/status")
    assert status == 503 and headers["Content-Type"] == "application/json", (status, body)
    assert "make lesson-part2" in json.loads(body)["error"], body

    # Busy on one slow request, the one-at-a-time server stays healthy: the healthcheck
    # asks whether it listens, not for a /hello that would queue behind /sleep.
    slow = threading.Thread(target=stack.request, args=("GET", "/sleep?s=12"))
    busy_since = time.time()
    slow.start()
    time.sleep(11)
    checks = [
        check
        for check in health_log(stack)
        if check["Start"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(busy_since))
    ]
    slow.join(30)
    assert checks and all(check["ExitCode"] == 0 for check in checks), checks

    notes = make(stack, "lesson-part1")
    assert "webserver1.py" in notes, notes
    status, _, body = stack.request("GET", "/anything?x=1")
    assert status == 200, (status, body)
    assert body == b"Hello, World!\nYou sent: GET /anything?x=1 HTTP/1.1\n", body
    assert "recv() -> " in stack.compose("logs", "server").stdout

    make(stack, "app-flask")  # and wizgy is back, status listener and all
    assert stack.get_json("/wizgy/status")["model"] == "prefork"
    assert stack.request("GET", "/hello")[2] == b"Hello, World! from Flask\n"
