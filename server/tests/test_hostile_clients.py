"""What attack tools found (issue 17), each as a client that does it over real sockets
against real server processes: an upload cut off mid-body, a client that keeps sending
after its 400, and the default command under a slow request and a slow reader."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest
from conftest import (
    APPS,
    AVAILABLE_MODELS,
    children_of,
    connect,
    read_response,
    run_wizgy,
    wait_for,
)

HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


def aborted_upload(port: int, declared: int, sent: int) -> None:
    """Content-Length: declared, `sent` bytes of it, then the client closes (what
    slowhttptest -B does when it gives up)."""
    with connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (declared, b"x" * sent))
        time.sleep(0.1)


@pytest.mark.parametrize("model", AVAILABLE_MODELS)
def test_an_aborted_upload_is_one_info_line_and_never_reaches_the_app(model):
    """Flask would log `Exception on /echo [POST]` and a traceback for every client
    that gives up mid-upload if the app were called: it is not."""
    with run_wizgy("-k", model, "--keep-alive", "5", "flaskapp:app", cwd=APPS) as srv:
        for declared, sent in [(100, 3), (8192, 4096), (65536, 0)]:
            aborted_upload(srv.port, declared, sent)
        with connect(srv.port) as sock:  # a chunked one: read whole before the app, too
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\n5\r\nhello\r\n")
            time.sleep(0.1)
        with connect(srv.port) as sock:  # after a first request on the same connection
            sock.sendall(HELLO)
            assert read_response(sock)[0] == 200
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\n\r\nab")
            time.sleep(0.1)
        with connect(srv.port) as sock:  # after Expect: 100-continue (curl's large POSTs)
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"abc")
            time.sleep(0.1)
        with connect(srv.port) as sock:  # and the server goes on serving
            sock.sendall(HELLO)
            assert read_response(sock)[0] == 200
        lines = wait_for(lambda: len(re.findall(r"\[INFO\] .*left \d+ bytes into", srv.output()))
                         == 6 and srv.output(), what="six INFO lines")
        assert "Traceback" not in lines, lines
        assert "Exception on" not in lines, lines
        found = re.findall(r"left (\d+) bytes into the (\d+)-byte body of POST /echo", lines)
        assert sorted(found) == sorted([("3", "100"), ("4096", "8192"), ("0", "65536"),
                                        ("2", "200"), ("3", "100")])
        assert "left 5 bytes into the chunked body of POST /echo" in lines


def send_then_read(port: int, head: bytes, junk: int) -> tuple[bytes, str]:
    """Send a request head and `junk` bytes more from a second thread (as a client
    streaming an upload does) while reading: what came back, and how it ended ("eof",
    or the error: a reset means the server closed on bytes it had not read, and off
    loopback such a reset can destroy the response before the client reads it)."""
    sock = connect(port, timeout=10)

    def send() -> None:
        try:
            sock.sendall(head)
            for _ in range(junk // 16384):
                sock.sendall(b"z" * 16384)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
        end = "eof"
    except OSError as error:
        end = repr(error)
    sender.join(10)
    sock.close()
    return b"".join(chunks), end


BLOCKING = [m for m in AVAILABLE_MODELS if m in ("iterative", "fork", "prefork")]


@pytest.mark.parametrize(("case", "model"), [("bad-head", m) for m in AVAILABLE_MODELS]
                         + [("unread-body", m) for m in BLOCKING])  # (selector models
def test_closing_after_an_error_lingers_so_the_client_reads_it(model, case):  # read it all)
    """RFC 9112 9.6: shut down writing, read and discard what the client still sends
    for a bounded time, then close, so that the kernel sends FIN, not RST."""
    with run_wizgy("-k", model, "testapp:app") as srv:
        if case == "bad-head":  # 400, with an upload streaming in behind it
            head = b"POST /echo HTTP/1.1\r\nHost: t\r\nBad Field: x\r\nContent-Length: 900000\r\n\r\n"
            expect = b"HTTP/1.1 400 "
        else:  # a body the app does not read, over what is drained: the connection closes
            head = b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 900000\r\nExpect: 100-continue\r\n\r\n"
            expect = b"HTTP/1.1 200 "
        response, end = send_then_read(srv.port, head, 900_000)
        assert response.startswith(expect), response[:200]
        assert end == "eof", (end, response[:200])
        with connect(srv.port) as sock:  # and the server goes on serving
            sock.sendall(HELLO)
            assert read_response(sock)[0] == 200


def hello_latency(port: int) -> float:
    """Seconds for a new client's GET /hello, connect to last byte."""
    started = time.monotonic()
    with connect(port, timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, body = read_response(sock, timeout=10)
    assert (status, body) == (200, b"Hello, World!\n")
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["-k", "threaded"]], ids=["default", "threaded"])
def test_with_no_flags_a_slow_request_and_a_slow_reader_stall_nobody(args):
    """`wizgy app:app` as a newcomer starts it (issue 17: one evloop worker, or one pool
    thread, so /sleep?s=3 made every other client wait, and so did a client slowly
    reading a 64 MiB response)."""
    with run_wizgy(*args, "testapp:app") as srv:
        with connect(srv.port, timeout=10) as sleeper:
            sleeper.sendall(b"GET /sleep?s=3 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.3)  # it is in the app now
            waits = [hello_latency(srv.port) for _ in range(4)]
            assert max(waits) < 0.5, waits
            assert read_response(sleeper, timeout=10)[2] == b"slept 3\n"
        with connect(srv.port, timeout=10) as slow:  # 64 MiB, read 64 KiB at a time
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            slow.sendall(b"GET /big-stream?pieces=1024&size=65536 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert slow.recv(65536).startswith(b"HTTP/1.1 200 ")
            waits = []
            for _ in range(4):
                time.sleep(0.2)
                slow.recv(65536)
                waits.append(hello_latency(srv.port))
            assert max(waits) < 0.5, waits


@pytest.mark.slow
@pytest.mark.parametrize("model", ["evloop", "threaded"])
def test_a_trickled_expect_100_continue_body_stalls_nobody(model):
    """Issue 17 probe: after Expect: 100-continue the app read the body as it came,
    inline, so 5 clients trickling a byte every few seconds stalled every evloop
    worker of the default command (4 did -k threaded). The server asks for the body
    itself now and reads it parked, as any other."""
    args = ["-w", "1"] if model == "evloop" else ["--threads", "1"]
    with run_wizgy("-k", model, *args, "testapp:app") as srv:
        tricklers = []
        try:
            for _ in range(3):
                sock = connect(srv.port, timeout=10)
                tricklers.append(sock)
                sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                             b"Expect: 100-continue\r\n\r\n")
                assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
                sock.sendall(b"x")
            waits = []
            for _ in range(3):
                time.sleep(0.3)
                for sock in tricklers:
                    sock.sendall(b"x")
                waits.append(hello_latency(srv.port))
            assert max(waits) < 0.5, waits
        finally:
            for sock in tricklers:
                sock.close()


@pytest.mark.slow
def test_a_request_that_came_while_the_loop_was_busy_is_not_expired():
    """Issue 17 probe: one request in the app longer than --keep-alive, and the evloop
    worker, back in its loop, closed the keep-alive connections whose deadline had
    passed meanwhile: with the next request of each unread in the kernel (a reset;
    27 of 40 connections with the default command and /sleep?s=5)."""
    with run_wizgy("-k", "evloop", "-w", "1", "--keep-alive", "1", "testapp:app") as srv:
        with connect(srv.port, timeout=10) as idle, connect(srv.port, timeout=10) as slow:
            idle.sendall(HELLO)
            assert read_response(idle)[2] == b"Hello, World!\n"
            slow.sendall(b"GET /sleep?s=2.5 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.5)  # the worker is in the app now
            idle.sendall(HELLO)  # within --keep-alive, while the loop cannot read it
            status, _, body = read_response(idle, timeout=10)
            assert (status, body) == (200, b"Hello, World!\n")
            assert read_response(slow, timeout=10)[2] == b"slept 2.5\n"


def test_with_no_flags_idle_keep_alive_clients_do_not_take_the_sync_workers():
    """Issue 17 probe: -k prefork (sync: one thread a worker) kept connections alive 5 s
    by default, so as many idle keep-alive clients as workers took the whole server.
    The one-thread models now default to no keep-alive, as gunicorn's sync workers."""
    workers = 2 * len(os.sched_getaffinity(0)) + 1  # the default --workers
    with run_wizgy("-k", "prefork", "testapp:app") as srv:
        wait_for(lambda: len(children_of(srv.pid)) == workers, what="the workers")
        idle = []
        try:
            for _ in range(workers + 1):  # each asks once, then sits on its connection
                sock = connect(srv.port, timeout=10)
                idle.append(sock)
                sock.sendall(HELLO)
                status, headers, _ = read_response(sock, timeout=10)
                assert status == 200 and headers.get("connection") == "close"
            assert hello_latency(srv.port) < 0.5
        finally:
            for sock in idle:
                sock.close()
