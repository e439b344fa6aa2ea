"""Part 3's lessons as tests: each bug shows its phenomenon, and the correct model does not.

Real processes, real signals, real limits: the server runs as a subprocess, the
clients are sockets or loadtest/lesson_client.py (forked clients), and what is
checked is what an attendee would look at: the order responses come back in, EOF on
the client's socket, zombies in /proc, EMFILE in the log.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, SERVER_PYTHON, connect, read_response, run_wizgy, zombies_of

LESSON_CLIENT = REPO / "loadtest" / "lesson_client.py"
CLOSE = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def lesson_clients(port: int, *args: str) -> dict:
    """Run the lesson client against the server; its JSON report."""
    result = subprocess.run(
        [sys.executable, str(LESSON_CLIENT), "--port", str(port), "--json", *args],
        check=False, capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout)


def settled_zombies(pid: int, expect_none: bool, wait: float = 3.0) -> int:
    """Zombies of pid once things settle: polled until none (if none are expected) or
    until the count stops changing."""
    deadline = time.monotonic() + wait
    count = len(zombies_of(pid))
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = len(zombies_of(pid))
        if (expect_none and now == 0) or (not expect_none and now == count):
            return now
        count = now
    return len(zombies_of(pid))


def hello_with_close(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(CLOSE)
    status, headers, body = read_response(sock)
    assert status == 200 and body == b"Hello, World!\n" and headers["connection"] == "close"
    return sock


# --- the first experiment: iterative serialises, fork does not -------------------------

@pytest.mark.parametrize("model, first_done", [("iterative", "slow"), ("fork", "fast")])
def test_iterative_serialises_clients_and_fork_does_not(model, first_done):
    """Which answer comes first, read by one select() over both sockets.

    The slow client connects and sends first, so it is first in the accept queue;
    the order is then the server's, not which client thread the OS wakes first.
    """
    with run_wizgy("-k", model, "testapp:app") as srv, \
            connect(srv.port, timeout=10) as slow, connect(srv.port, timeout=10) as fast:
        slow.sendall(b"GET /sleep?s=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)  # the slow request is being served when the fast one is sent
        fast.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        readable, _, _ = select.select([slow, fast], [], [], 10)
        first = ["slow" if sock is slow else "fast" for sock in readable]
        if first_done == "fast":
            assert first == ["fast"], first
        else:  # a late wake-up may find the fast answer in too, but never it alone
            assert "slow" in first, first
        for sock in (slow, fast):
            assert read_response(sock, timeout=10)[0] == 200


# --- keep-duplicate-fds ------------------------------------------------------------------

@pytest.mark.parametrize("lesson", [[], ["--lesson", "keep-duplicate-fds"]],
                         ids=["fork", "keep-duplicate-fds"])
def test_client_gets_eof_unless_the_parent_keeps_its_copy(lesson):
    with run_wizgy("-k", "fork", *lesson, "testapp:app") as srv, \
            hello_with_close(srv.port) as sock:
        sock.settimeout(1.5)
        if lesson:
            with pytest.raises(TimeoutError):  # the response is complete; EOF never comes
                sock.recv(1)
            assert "WARNING] LESSON keep-duplicate-fds" in srv.output()
        else:
            assert sock.recv(1) == b""


@pytest.mark.slow
@pytest.mark.parametrize("lesson", [[], ["--lesson", "keep-duplicate-fds"]],
                         ids=["fork", "keep-duplicate-fds"])
def test_kept_copies_exhaust_descriptors_under_a_low_limit(lesson):
    def low_limit():  # the lab's `ulimit -n 256`, scaled down
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))

    with run_wizgy("-k", "fork", *lesson, "--graceful-timeout", "1", "testapp:app",
                   preexec_fn=low_limit) as srv:
        report = lesson_clients(srv.port, "--max-clients", "4", "--max-conns", "25",
                                "--wait", "2", "--timeout", "15")
        if lesson:
            assert report["succeeded"] == 0 and report["hung"] == 100, report
            srv.wait_for_output(r"Too many open files \(EMFILE\)")
        else:
            assert report["succeeded"] == 100, report
            assert "EMFILE" not in srv.output()


# --- no-reap -----------------------------------------------------------------------------

@pytest.mark.parametrize("lesson, zombies", [([], 0), (["--lesson", "no-reap"], 10)],
                         ids=["fork", "no-reap"])
def test_every_connection_leaves_a_zombie_unless_reaped(lesson, zombies):
    with run_wizgy("-k", "fork", *lesson, "--graceful-timeout", "1", "testapp:app") as srv:
        for _ in range(10):
            hello_with_close(srv.port).close()
        assert settled_zombies(srv.pid, expect_none=not zombies) == zombies


# --- reap-once ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("lesson", [[], ["--lesson", "reap-once"]], ids=["fork", "reap-once"])
def test_one_wait_per_sigchld_leaves_zombies_after_128_clients(lesson):
    with run_wizgy("-k", "fork", *lesson, "--graceful-timeout", "1", "testapp:app") as srv:
        report = lesson_clients(srv.port, "--max-clients", "128", "--timeout", "30")
        assert report["succeeded"] == 128, report
        zombies = settled_zombies(srv.pid, expect_none=not lesson)
        if lesson:
            # Signals merged: fewer wait() calls than children. (Typically dozens.)
            assert zombies > 0
        else:
            assert zombies == 0


# --- selecting a lesson ------------------------------------------------------------------

def test_lesson_from_the_environment_is_logged_as_a_warning():
    with run_wizgy("-k", "fork", "--graceful-timeout", "1", "testapp:app",
                   env={"WIZGY_LESSON": "no-reap"}) as srv:
        srv.wait_for_output(r"\[WARNING\] LESSON no-reap: .*zombie")


def test_lesson_needs_the_fork_model():
    result = subprocess.run([SERVER_PYTHON, "-m", "wizgy", "-k", "threaded", "--lesson",
                             "reap-once", "testapp:app"], check=False, capture_output=True,
                            text=True, timeout=30,
                            env={"PYTHONPATH": str(REPO / "server"), "PATH": ""})
    assert result.returncode == 2
    assert "--lesson reap-once needs the fork model (-k fork)" in result.stderr
