"""The lesson client (loadtest/lesson_client.py) against real sockets.

Tiny standard-library servers, each with one behaviour, prove that every
outcome is told apart: answered and closed (succeeded), never answered (hung),
answered without EOF (hung: the keep-duplicate-fds symptom), reset, refused.
Then the client runs against wizgy itself, on every model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import APPS, run_server, run_wizgy

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "loadtest" / "lesson_client.py"

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n"
)


def load_client_module():
    spec = importlib.util.spec_from_file_location("lesson_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def run_client(port: int, *args: str, timeout: float = 30) -> tuple[int, dict]:
    """Run the client as its own process (it forks) and return (exit status, report)."""
    done = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), "--json", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    return done.returncode, json.loads(done.stdout)


def read_head(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk


@contextlib.contextmanager
def tiny_server(handle, accept: bool = True):
    """A listener on 127.0.0.1:0; `handle(sock, kept)` runs per connection on a thread.

    Sockets the handler appends to `kept` stay open until the server stops.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.settimeout(0.1)
    stop = threading.Event()
    kept: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError):
                handle(sock, kept)

    thread = threading.Thread(target=serve, daemon=True)
    if accept:
        thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        if accept:
            thread.join()
        for sock in kept:
            sock.close()
        listener.close()


def answer_and_close(sock, kept):
    read_head(sock)
    sock.sendall(RESPONSE)
    sock.close()


def answer_chunked_and_close(sock, kept):
    read_head(sock)
    sock.sendall(CHUNKED)
    sock.close()


def answer_and_keep_open(sock, kept):
    read_head(sock)
    sock.sendall(RESPONSE)
    kept.append(sock)


def never_answer(sock, kept):
    kept.append(sock)


def reset(sock, kept):
    read_head(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_all_succeed_when_the_server_answers_and_closes():
    with tiny_server(answer_and_close) as port:
        status, report = run_client(port, "--max-clients", "4", "--max-conns", "5")
    assert status == 0
    assert (report["total"], report["succeeded"], report["statuses"]) == (20, 20, {"200": 20})


def test_a_chunked_response_with_trailers_is_complete():
    with tiny_server(answer_chunked_and_close) as port:
        status, report = run_client(port, "--max-conns", "3")
    assert status == 0
    assert report["succeeded"] == 3


def test_all_hang_when_the_server_never_answers():
    with tiny_server(never_answer) as port:
        status, report = run_client(port, "--max-clients", "2", "--max-conns", "3", "--wait", "0.5")
    assert status == 1
    assert report["hung"] == 6
    assert report["reasons"] == {"no complete response": 6}


def test_a_response_without_eof_is_hung():
    # What a client sees from the keep-duplicate-fds lesson: the body, no FIN.
    with tiny_server(answer_and_keep_open) as port:
        status, report = run_client(port, "--max-conns", "3", "--wait", "0.5")
    assert status == 1
    assert report["hung"] == 3
    assert report["statuses"] == {"200": 3}
    assert report["reasons"] == {"no EOF after the response": 3}


def test_keep_alive_expects_no_eof():
    with tiny_server(answer_and_keep_open) as port:
        status, report = run_client(port, "--max-conns", "3", "--keep-alive")
    assert status == 0
    assert report["succeeded"] == 3


def test_a_listener_that_never_accepts_still_hangs():
    with tiny_server(never_answer, accept=False) as port:
        _, report = run_client(port, "--max-conns", "4", "--wait", "0.5")
    assert report["hung"] == 4


def test_reset_connections_are_counted_as_reset():
    with tiny_server(reset) as port:
        status, report = run_client(port, "--max-clients", "2", "--max-conns", "2")
    assert status == 1
    assert report["reset"] == 4


def test_a_closed_port_is_refused():
    status, report = run_client(closed_port(), "--max-clients", "3", "--max-conns", "2")
    assert status == 1
    assert report["refused"] == 6
    assert report["reasons"] == {"ECONNREFUSED": 6}


def test_the_global_timeout_bounds_the_run():
    with tiny_server(never_answer) as port:
        started = time.monotonic()
        status, report = run_client(
            port, "--max-clients", "3", "--max-conns", "2", "--wait", "60", "--timeout", "1.5"
        )
        elapsed = time.monotonic() - started
    assert status == 1
    assert report["hung"] == 6
    assert elapsed < 5


def test_hold_keeps_connections_open_after_the_response():
    with tiny_server(answer_and_close) as port:
        started = time.monotonic()
        status, report = run_client(port, "--max-conns", "2", "--hold", "1")
        elapsed = time.monotonic() - started
    assert status == 0
    assert report["succeeded"] == 2
    assert elapsed >= 1


def test_bad_arguments_exit_2():
    done = subprocess.run(
        [sys.executable, str(CLIENT), "--max-clients", "0"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2


@pytest.mark.parametrize(
    ("chunks", "complete"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"], False),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], True),
        ([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"], True),
        ([CHUNKED[:-2]], False),
        ([CHUNKED], True),
        ([b"HTTP/1.0 200 OK\r\n\r\nuntil EOF"], None),
    ],
)
def test_response_framing(chunks, complete):
    client = load_client_module()
    buf = b"".join(chunks)
    status, headers, offset = client.parse_head(buf)
    assert client.body_complete(status, headers, buf[offset:]) is complete


def test_against_wizgy(model):
    with run_wizgy("-k", model, "flaskapp:app", cwd=APPS) as server:
        status, report = run_client(server.port, "--max-clients", "4", "--max-conns", "5")
        assert status == 0, report
        assert report["succeeded"] == 20
        # Keep-alive: wizgy keeps the connection open after the response, so
        # success is the full response alone; --hold keeps them open a while.
        status, report = run_client(
            server.port, "--max-clients", "2", "--max-conns", "3", "--keep-alive", "--hold", "0.5"
        )
        assert status == 0, report
        assert report["succeeded"] == 6


# --- the lesson's language: outcomes apart, what the lesson predicts beside what it saw ---

def run_text(port: int, *args: str, timeout: float = 60) -> tuple[int, str]:
    """The client's printed report (what `make clients` shows) and its exit status."""
    done = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr


def answer_503_and_close(sock, kept):
    read_head(sock)
    sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    sock.close()


def test_outcomes_are_counted_apart():
    with tiny_server(answer_503_and_close) as port:
        status, report = run_client(port, "--max-conns", "4")
    assert status == 1  # no lesson: every connection should have been a 2xx
    assert (report["503"], report["2xx"], report["succeeded"]) == (4, 0, 0), report
    with tiny_server(answer_and_keep_open) as port:
        _, report = run_client(port, "--max-conns", "2", "--wait", "0.5")
    assert (report["no_eof"], report["timeout"], report["hung"]) == (2, 0, 2), report
    with tiny_server(never_answer) as port:
        _, report = run_client(port, "--max-conns", "2", "--wait", "0.5")
    assert (report["no_eof"], report["timeout"], report["hung"]) == (0, 2, 2), report
    with tiny_server(reset) as port:
        _, report = run_client(port, "--max-conns", "2")
    assert report["reset"] == 2 and report["2xx"] == report["503"] == 0, report


@contextlib.contextmanager
def lesson_server(*args: str, **kwargs):
    """wizgy on the fork model with its status listener; yields (server, status URL)."""
    with run_wizgy("-k", "fork", "--graceful-timeout", "1", "--status-bind", "127.0.0.1:0",
                   *args, "testapp:app", **kwargs) as server:
        port = server.wait_for_output(r"Status at: http://127\.0\.0\.1:(\d+)").group(1)
        yield server, f"http://127.0.0.1:{port}/status"


@pytest.mark.slow
def test_reap_once_leaves_zombies_as_the_lesson_predicts():
    with lesson_server("--lesson", "reap-once") as (server, status_url):
        status, out = run_text(server.port, "--max-clients", "128", "--status", status_url)
        assert status == 0, out
        assert "lesson reap-once" in out and "expected: only 2xx - saw 0 others" in out
        saw = int(re.search(r"^expected: zombies > 0 - saw (\d+)$", out, re.M).group(1))
        assert saw > 0 and "as the lesson predicts" in out, out


def test_the_correct_fork_model_predicts_no_zombies():
    with lesson_server() as (server, status_url):
        status, out = run_text(server.port, "--max-clients", "64", "--status", status_url)
        assert status == 0, out
        assert "expected: zombies = 0 - saw 0" in out, out


def test_keep_duplicate_fds_gives_no_eof_as_the_lesson_predicts():
    with lesson_server("--lesson", "keep-duplicate-fds") as (server, status_url):
        status, report = run_client(server.port, "--max-clients", "5", "--max-conns", "2",
                                    "--wait", "1", "--status", status_url)
        assert status == 0, report
        assert report["no_eof"] == 10 and report["statuses"] == {"200": 10}, report
        assert report["predictions"] == [
            {"expected": "only no EOF, timeout", "saw": 0, "unit": " others", "holds": True},
            {"expected": "no EOF > 0", "saw": 10, "unit": "", "holds": True},
        ]


def processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                count += 1
    return count


def test_no_reap_answers_503_at_the_process_limit_as_the_lesson_predicts():
    """The lesson at a real `ulimit -u`: zombies fill it, fork() fails, the parent
    answers 503. Root is exempt from RLIMIT_NPROC, so as root the server runs as
    nobody (who has no other processes); otherwise the limit sits 30 above what this
    user already runs."""
    as_root = os.geteuid() == 0
    uid = 65534 if as_root else os.getuid()
    limit = 30 + (0 if as_root else processes_of(uid))

    def limited():
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        if as_root:
            os.setgid(65534)
            os.setgroups([])
            os.setuid(65534)

    python = "/usr/bin/python3" if as_root and os.path.exists("/usr/bin/python3") else \
        sys.executable  # nobody may not read the test's virtualenv; wizgy needs the stdlib only
    cmd = [python, "-m", "wizgy", "-b", "127.0.0.1:0", "-k", "fork", "--lesson", "no-reap",
           "--graceful-timeout", "1", "--status-bind", "127.0.0.1:0", "testapp:app"]
    with run_server(cmd, preexec_fn=limited) as server:
        port = server.wait_for_output(r"Status at: http://127\.0\.0\.1:(\d+)").group(1)
        status, report = run_client(server.port, "--max-clients", "60",
                                    "--status", f"http://127.0.0.1:{port}/status")
        assert status == 0, report
        assert report["503"] > 0 and report["2xx"] > 0, report
        assert report["2xx"] + report["503"] == 60, report
        assert report["server"]["fork_failures_during_run"] == report["503"], report
        assert report["server"]["zombies"] == report["2xx"], report  # never reaped
        assert report["server"]["nproc_limit"] == limit


def test_a_lesson_that_does_not_show_is_a_failure():
    # reap-once expected, the correct model running: no zombies, so the client fails.
    with lesson_server() as (server, status_url):
        status, out = run_text(server.port, "--max-clients", "8", "--lesson", "reap-once",
                               "--status", status_url)
        assert status == 1, out
        assert "expected: zombies > 0 - saw 0   <- not as predicted" in out, out
        assert "NOT as the lesson predicts" in out
        # A status listener that does not answer: the kit failed, not the lesson.
        status, out = run_text(server.port, "--max-clients", "2", "--lesson", "reap-once",
                               "--status", f"http://127.0.0.1:{closed_port()}/status")
        assert status == 1 and "not seen (--status did not answer)" in out, out
