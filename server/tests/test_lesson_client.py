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
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import APPS, run_wizgy

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
