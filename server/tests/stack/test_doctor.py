"""`make doctor` against this machine's real Docker engine: all good here, and a
published port someone else holds is one FIX line with its fix."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doctor(**env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COMPOSE_PROJECT_NAME": f"wizgy-test-{os.getpid()}", **env}
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "doctor"],
                          env=environment, capture_output=True, text=True, timeout=240,
                          check=False)  # fmt: skip


def test_doctor_finds_everything_here(images):
    result = doctor(NGINX_PORT=str(free_port()), LOCUST_PORT=str(free_port()))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("FIX")], lines
    for expected in (
        "Docker engine",
        "Docker Compose",
        "NGINX_PORT) is free",
        "LOCUST_PORT) is free",
        "GiB free for images",
        "the engine applies ulimits and pids_limit (nofile 321, nproc 123, pids 77)",
    ):
        assert any(expected in line for line in lines), (expected, lines)  # fmt: skip
    assert lines[-1] == "doctor: all good: make up"


def test_doctor_names_a_port_in_use_and_its_fix(images):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = doctor(NGINX_PORT=str(port), LOCUST_PORT=str(free_port()))
    assert result.returncode != 0, result.stdout
    fixes = [line.strip() for line in result.stdout.splitlines() if line.lstrip().startswith("FIX")]
    assert len(fixes) == 1, result.stdout
    assert fixes[0].startswith(f"FIX   port {port} (NGINX_PORT) is in use"), fixes
    assert "NGINX_PORT=" in fixes[0] and fixes[0].endswith("make up"), fixes
    assert "1 thing(s) to fix" in result.stdout
