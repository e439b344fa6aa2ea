"""Behaviour over real sockets, written once and run against every model."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    AVAILABLE_MODELS,
    LogView,
    connect,
    exchange,
    proc_state,
    read_response,
    read_until_close,
    run_wizgy,
    unexpected_tracebacks,
    wait_for,
)

GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


# The exceptions testapp raises on purpose (/error, /error-mid-stream): their
# tracebacks are expected; any other traceback fails the test that caused it.
BOOM = r"RuntimeError: boom (before start_response|mid-stream)"


@pytest.fixture(scope="module", params=AVAILABLE_MODELS)
def model(request) -> str:
    """Module-scoped here (the tests are grouped by model): one shared server each."""
    return request.param


def assert_clean(output: str) -> None:
    assert "WSGIWarning" not in output
    assert unexpected_tracebacks(output, BOOM) == [], output


def serving(model, close_log):
    with run_wizgy("-k", model, "--keep-alive", "5", "testapp:app",
                   env={"TESTAPP_CLOSE_LOG": str(close_log)}) as srv:
        srv.close_log = close_log
        srv.model = model
        yield srv
    assert_clean(srv.output())


@pytest.fixture(scope="module")
def shared_server(model, tmp_path_factory):
    """One server per model for the tests that need no fresh one: no signals, no
    other options."""
    yield from serving(model, tmp_path_factory.mktemp("closes") / "closes")


@pytest.fixture
def server(shared_server):
    """The shared server, its log seen from this test's start on."""
    view = LogView(shared_server)
    yield view
    assert_clean(view.output())


@pytest.fixture(scope="module")
def counting_server(model, tmp_path_factory):
    """One server per model for the tests that count close() calls in its close log:
    each of them waits for its own (closes()), so the next one starts with none due."""
    yield from serving(model, tmp_path_factory.mktemp("closes") / "closes")


@pytest.fixture
def counted_server(counting_server):
    """The counting server, its close log emptied and its log seen from here on."""
    counting_server.close_log.unlink(missing_ok=True)
    view = LogView(counting_server)
    yield view
    assert_clean(view.output())


def get(port, path, headers=b""):
    with connect(port) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path, headers))
        return read_response(sock)


def closes(srv) -> list[str]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        text = srv.close_log.read_text() if srv.close_log.exists() else ""
        if text.endswith("\n"):
            time.sleep(0.1)  # a second close() would show up by now
            return srv.close_log.read_text().split()
        time.sleep(0.05)
    return []


# --- basic responses ----------------------------------------------------------------

def test_hello(server):
    status, headers, body = get(server.port, b"/hello")
    assert (status, body) == (200, b"Hello, World!\n")
    assert headers["server"] == "wizgy"
    assert headers["date"].endswith(" GMT")


def test_keep_alive_serves_many_requests_on_one_connection(server):
    with connect(server.port) as sock:
        for _ in range(5):
            sock.sendall(GET % b"/hello")
            status, headers, body = read_response(sock)
            assert status == 200 and body == b"Hello, World!\n"
            assert "connection" not in headers


def test_keep_alive_0_closes_after_each_response(model):
    """gunicorn's meaning of --keep-alive 0 (its sync worker's only way): no keep-alive,
    so a sync worker behind nginx is never held by an idle upstream connection."""
    with run_wizgy("-k", model, "--keep-alive", "0", "testapp:app") as srv:
        for _ in range(3):  # the server keeps serving, one connection per request
            with connect(srv.port) as sock:
                sock.sendall(GET % b"/hello")
                status, headers, body = read_response(sock)
                assert (status, body) == (200, b"Hello, World!\n")
                assert headers["connection"] == "close"
                assert read_until_close(sock) == b""
        assert "Traceback" not in srv.output()


def test_pipelined_requests_answered_in_order(server):
    with connect(server.port) as sock:
        sock.sendall(GET % b"/stream?n=2" + GET % b"/hello" + GET % b"/length?n=3")
        assert read_response(sock)[2] == b"chunk 0\nchunk 1\n"
        assert read_response(sock)[2] == b"Hello, World!\n"
        assert read_response(sock)[2] == b"xxx"


def test_streamed_response_is_chunked_on_http11(counted_server):
    status, headers, body = get(counted_server.port, b"/stream?n=100")
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"".join(b"chunk %d\n" % i for i in range(100))
    assert closes(counted_server) == ["stream"]


def test_http10_gets_close_delimited_body_and_closes(server):
    raw = exchange(server.port, b"GET /stream?n=3 HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_http10_keep_alive_on_request(server):
    with connect(server.port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /length?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = read_response(sock)
            assert headers["connection"] == "keep-alive" and body == b"xxx"


def test_connection_close_is_honoured(server):
    raw = exchange(server.port, b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in raw


def test_head_has_no_body(server):
    with connect(server.port) as sock:
        sock.sendall(b"HEAD /length?n=5 HTTP/1.1\r\nHost: t\r\n\r\n" + GET % b"/hello")
        sock.settimeout(5)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(4096)
        first, second = data.split(b"HTTP/1.1 200 OK")[1:]
        assert b"Content-Length: 5\r\n" in first and first.endswith(b"\r\n\r\n")  # no body
        assert second.endswith(b"e\r\nHello, World!\n\r\n0\r\n\r\n")


def test_head_without_a_body_gets_no_made_up_length(server):
    # An app that sends no body for HEAD (werkzeug's way) does not know GET's length:
    # "Content-Length: 0" would be a lie (RFC 9110 9.3.2), and on a 204 it is forbidden
    # (8.6). The connection stays open either way.
    with connect(server.port) as sock:
        for path in (b"/head-empty", b"/no-content"):
            sock.sendall(b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
            sock.settimeout(5)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += sock.recv(1)
            assert b"Content-Length" not in head and b"Connection: close" not in head, head
        sock.sendall(GET % b"/head-empty")
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"x" * 30)


def test_options_asterisk_reaches_the_app_with_an_empty_path(server):
    # CGI's PATH_INFO is empty or starts with "/" (the app runs under wsgiref.validate);
    # RAW_URI keeps the "*".
    with connect(server.port) as sock:
        sock.sendall(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(sock)
    assert (status, json.loads(body)) == (200, {"PATH_INFO": ""})
    assert headers["allow"] == "GET, HEAD, POST, OPTIONS"


def test_204_has_no_body(server):
    status, headers, body = get(server.port, b"/no-content")
    assert status == 204 and body == b"" and "transfer-encoding" not in headers


def test_write_callable(server):
    assert get(server.port, b"/write")[2] == b"written and returned\n"


def test_file_wrapper_sends_the_file(model):
    with run_wizgy("-k", model, "testapp:raw_app") as srv:  # unwrapped: sendfile() path
        status, headers, body = get(srv.port, b"/file")
    expected = (Path(__file__).parent / "apps" / "testapp.py").read_bytes()
    assert body == expected and headers["content-length"] == str(len(expected))


def test_exc_info_replaces_unsent_headers(server):
    status, _, body = get(server.port, b"/exc-info")
    assert status == 500 and body == b"replaced\n"


def test_404_and_close_called_once(counted_server):
    status, _, _ = get(counted_server.port, b"/length?n=5")
    assert status == 200
    assert closes(counted_server) == ["length"]


# --- request bodies ------------------------------------------------------------------

def test_content_length_body(server):
    body = os.urandom(300_000)
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        result = json.loads(read_response(sock)[2])
    assert result == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                      "content_length": str(len(body))}


def test_chunked_body_with_extensions_and_trailers(server):
    chunks = [b"hello ", b"chunked ", b"world"]
    raw = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-T: 1\r\n\r\n"
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + raw + GET % b"/hello")
        result = json.loads(read_response(sock)[2])
        # read whole before the app runs, so its length is told (Django needs it)
        assert result["length"] == len(b"".join(chunks)) == int(result["content_length"])
        assert read_response(sock)[2] == b"Hello, World!\n"


def test_readline_iteration(server):
    body = b"one\ntwo\nthree"
    with connect(server.port) as sock:
        sock.sendall(b"POST /lines HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\n" + body)
        assert json.loads(read_response(sock)[2]) == ["one\n", "two\n", "three"]


def test_unread_small_body_is_drained_and_connection_kept(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                     + GET % b"/hello")
        assert read_response(sock)[2] == b"ignored\n"
        assert read_response(sock)[2] == b"Hello, World!\n"


def test_unread_body_of_exactly_the_drain_limit_keeps_the_next_request(server):
    # 65536 bytes use the whole drain budget; the end of the body comes after them and
    # the pipelined GET behind it must still be answered.
    with connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n"
                     + b"a" * 65536 + GET % b"/hello")
        assert read_response(sock)[2] == b"ignored\n"
        assert read_response(sock)[2] == b"Hello, World!\n"


def test_bad_request_after_a_keep_alive_response_gets_its_400(server):
    # The first response is long done: the second request's refusal must be sent, not
    # mistaken for an error in the middle of a response (which can only close).
    with connect(server.port) as sock:
        sock.sendall(GET % b"/hello")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost t\r\n\r\n")
        status, headers, body = read_response(sock)
        assert (status, headers["connection"]) == (400, "close")
        assert b"malformed header field" in body
        assert read_until_close(sock) == b""


def test_large_body_read_to_its_length_keeps_the_connection(server):
    # Frameworks read a body to Content-Length and never ask for EOF; the connection
    # must stay open for a body too big to drain (it used to close after each upload).
    body = b"u" * (1 << 20)
    with connect(server.port) as sock:
        sock.sendall(b"POST /read-exactly HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
        status, headers, reply = read_response(sock)
        assert (status, reply) == (200, b"1048576\n") and "connection" not in headers
        sock.sendall(GET % b"/hello")
        assert read_response(sock)[2] == b"Hello, World!\n"


# The selector models read a body whole before the app runs; the others as it asks.
SPOOLING_MODELS = [m for m in ("threaded", "evloop") if m in AVAILABLE_MODELS]
STREAMING_MODELS = [m for m in AVAILABLE_MODELS if m not in SPOOLING_MODELS]


@pytest.mark.parametrize("model", STREAMING_MODELS, indirect=True)
def test_unread_large_body_closes_connection(server):
    # An answer before the body is whole says it will close.
    with connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 200 and headers["connection"] == "close"


@pytest.mark.parametrize("model", SPOOLING_MODELS, indirect=True)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_large_body_the_app_ignores_was_read_whole_first(server, framing):
    # Read whole (a 3 MB one into a temporary file) before the app runs: the app
    # answers after it, and the connection stays open.
    body = b"b" * 3_000_000
    if framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                        for part in (body[i:i + 70_000] for i in range(0, len(body), 70_000)))
        body += b"0\r\n\r\n"
    else:
        head = b"Content-Length: %d\r\n\r\n" % len(body)
    with connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\n" + head)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no answer while the body is on its way
            sock.recv(1)
        sock.sendall(body + GET % b"/echo")
        status, headers, reply = read_response(sock)
        assert (status, reply) == (200, b"ignored\n") and "connection" not in headers
        assert json.loads(read_response(sock)[2])["length"] == 0


def test_expect_100_continue_sent_when_app_reads(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        sock.settimeout(5)
        interim = sock.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        assert json.loads(read_response(sock)[2])["length"] == 4


def test_expect_100_continue_is_answered_at_once_for_a_body_read_first(server):
    # A body the server reads before the app runs (every body in the selector models,
    # up to 64 KiB in the blocking ones): the server asks for it itself, so a client
    # trickling it never holds the app (issue 17 probe: 5 such clients stalled evloop).
    with connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data" + GET % b"/hello")
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"ignored\n") and "connection" not in headers
        assert read_response(sock)[2] == b"Hello, World!\n"


@pytest.mark.parametrize("model", [m for m in AVAILABLE_MODELS if m in ("iterative", "fork",
                                                                        "prefork")])
def test_expect_100_continue_not_sent_when_app_ignores_body(model):
    # The blocking models stream a body over 64 KiB to the app: the app is asked first.
    # (The selector models read every body first: the test above.)
    with run_wizgy("-k", model, "testapp:app") as server, connect(server.port) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 200 and headers["connection"] == "close"


# --- environ -------------------------------------------------------------------------

def test_environ(server):
    _, _, body = get(server.port, b"/environ?a=1&b=%20", b"X-Custom: one\r\nX-Custom: two\r\n"
                     b"X_Custom: spoof\r\nContent-Type: text/x\r\n")
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_CUSTOM"] == "one, two"  # the underscore variant was dropped
    assert env["CONTENT_TYPE"] == "text/x" and "HTTP_CONTENT_TYPE" not in env
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.input_terminated"] is True
    assert env["wsgi.version"] == [1, 0] and env["wsgi.run_once"] is False
    expected = {"iterative": (False, False), "threaded": (True, False), "evloop": (False, True),
                "fork": (False, True), "prefork": (False, True)}[server.model]
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"]) == expected


def test_percent_decoded_path_is_latin1(server):
    env = json.loads(get(server.port, b"/environ/caf%C3%A9%2F")[2])
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9/"


def test_absolute_form_target_sets_host(server):
    with connect(server.port) as sock:
        sock.sendall(b"GET http://example.org:8080/environ HTTP/1.1\r\nHost: other\r\n\r\n")
        env = json.loads(read_response(sock)[2])
    assert env["HTTP_HOST"] == "example.org:8080" and env["PATH_INFO"] == "/environ"
    assert env["SERVER_NAME"] == "example.org" and env["SERVER_PORT"] == "8080"


def test_server_name_without_host_is_the_address_connected_to(model):
    """An HTTP/1.0 request may come without Host: SERVER_NAME and SERVER_PORT are then
    the local end of the connection, whether the listener was bound to one address
    (wizgy knows it from the listener) or to all of them (it asks the socket)."""
    for bind in ("127.0.0.1:0", "0.0.0.0:0"):
        with run_wizgy("-k", model, "-b", bind, "testapp:app", bind=False) as srv:
            raw = exchange(srv.port, b"GET /environ HTTP/1.0\r\n\r\n")
            env = json.loads(raw.partition(b"\r\n\r\n")[2])
            assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.port)), bind


def test_forwarded_headers_trusted_from_localhost(server):
    env = json.loads(get(server.port, b"/environ",
                         b"X-Forwarded-For: 1.2.3.4, 10.0.0.7\r\nX-Forwarded-Proto: https\r\n")[2])
    assert env["REMOTE_ADDR"] == "10.0.0.7" and env["wsgi.url_scheme"] == "https"


# --- errors ---------------------------------------------------------------------------

def test_app_exception_gives_500_and_server_keeps_serving(server):
    raw = exchange(server.port, GET % b"/error")
    assert raw.startswith(b"HTTP/1.1 500 ") and b"boom" not in raw
    assert get(server.port, b"/hello")[0] == 200
    server.wait_for_output("RuntimeError: boom before start_response")


def test_app_exception_mid_stream_closes_connection(counted_server):
    with connect(counted_server.port) as sock:
        sock.sendall(GET % b"/error-mid-stream")
        raw = read_until_close(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK") and not raw.endswith(b"0\r\n\r\n")
    assert closes(counted_server) == ["error-mid-stream"]
    assert get(counted_server.port, b"/hello")[0] == 200


def test_client_disconnect_mid_body_leaves_server_serving(server):
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial")
        sock.shutdown(socket.SHUT_WR)  # the client leaves mid-body...
        read_until_close(sock)  # ...and the server is done with it: it closed its end
    assert get(server.port, b"/hello")[0] == 200


def test_client_disconnect_mid_response(counted_server):
    with connect(counted_server.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(GET % b"/stream?n=200000")
        sock.recv(100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert closes(counted_server) == ["stream"]
    assert get(counted_server.port, b"/hello")[0] == 200
    assert "Traceback" not in counted_server.output()


REJECTIONS = [
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"y" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
]


@pytest.mark.parametrize("raw,status", REJECTIONS, ids=[f"{s}-{i}" for i, (_, s) in
                                                         enumerate(REJECTIONS)])
def test_bad_requests_are_refused_and_closed(server, raw, status):
    response = exchange(server.port, raw + GET % b"/hello")  # a smuggled follow-up
    assert response.startswith(b"HTTP/1.1 %d " % status), response[:80]
    assert b"Connection: close" in response
    assert b"HTTP/1.1 200" not in response  # the smuggled request was never answered
    assert get(server.port, b"/hello")[0] == 200


def test_body_over_max_body_is_413(model):
    with run_wizgy("-k", model, "--max-body", "10", "testapp:app") as srv:
        raw = exchange(srv.port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 413 ")
        chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" \
                  b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        assert exchange(srv.port, chunked).startswith(b"HTTP/1.1 413 ")


@pytest.mark.slow
def test_head_timeout_is_408(model):
    with run_wizgy("-k", model, "--timeout", "1", "testapp:app") as srv:
        with connect(srv.port) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\n")
            started = time.monotonic()
            raw = read_until_close(sock, timeout=10)
        assert raw.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 8


def test_contract_violations_become_500(model):
    with run_wizgy("-k", model, "testapp:bad_app") as srv:
        for path in (b"/hop-by-hop", b"/crlf-header", b"/str-body", b"/no-start",
                     b"/two-content-lengths", b"/interim-status"):
            raw = exchange(srv.port, GET % path)
            assert raw.startswith(b"HTTP/1.1 500 "), (path, raw[:100])
            assert b"Set-Cookie" not in raw
        assert get(srv.port, b"/hello")[0] == 200
        # wizgy caches each start_response it has checked; the same fields passed the
        # wrong way after a valid /hello must still be refused, not taken from the cache.
        for path in (b"/tuple-headers", b"/bytes-status"):
            raw = exchange(srv.port, GET % path)
            assert raw.startswith(b"HTTP/1.1 500 "), (path, raw[:100])
        assert get(srv.port, b"/hello")[0] == 200


# --- lifecycle ---------------------------------------------------------------------------

def test_usr1_reopens_the_logs_and_hup_usr2_ttin_ttou_never_kill_or_suspend(model, tmp_path):
    # logrotate renames the file and sends USR1; HUP, USR2, TTIN and TTOU (gunicorn's
    # reload, upgrade, a worker more or fewer) are handled or refused out loud, never
    # the default action: death (HUP, USR2), or, for TTIN and TTOU, the process stopped
    # (state T) with every client hanging.
    log = tmp_path / "access.log"
    workers = ["-w", "2"] if model in ("evloop", "prefork") else []
    with run_wizgy("-k", model, *workers, "--access-logfile", str(log), "testapp:app") as srv:
        assert get(srv.port, b"/hello")[0] == 200
        log.rename(tmp_path / "access.log.1")
        os.kill(srv.pid, signal.SIGUSR1)
        srv.wait_for_output(r"Handling signal: usr1", timeout=5)
        if workers:  # the master passes it on; each worker's watchdog reopens its own
            wait_for(lambda: srv.output().count("reopened the log files") == 2,
                     what="both workers to reopen")
        for signum in (signal.SIGUSR2, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            os.kill(srv.pid, signum)
            srv.wait_for_output(rf"Handling signal: {signum.name[3:].lower()}", timeout=5)
            assert srv.proc.poll() is None, signum
            assert proc_state(srv.pid) != "T", signum
        assert get(srv.port, b"/environ")[0] == 200
        assert srv.proc.poll() is None
        output = srv.output()
    assert "USR2" in output.upper() and ("not supported" in output), output
    assert '"GET /environ HTTP/1.1" 200' in wait_for_text(log, "/environ")
    assert "/environ" not in (tmp_path / "access.log.1").read_text()


def wait_for_text(path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (found := path.read_text()):
            return found
        time.sleep(0.05)
    return path.read_text() if path.exists() else ""


ANNOUNCE = {"TESTAPP_ANNOUNCE": "1"}  # testapp logs "/sleep?s=N began"


def test_sigterm_lets_in_flight_request_finish(model):
    with run_wizgy("-k", model, "--threads", "2", "testapp:app", env=ANNOUNCE) as srv:
        result = {}

        def slow():
            result["response"] = get(srv.port, b"/sleep?s=1.5")

        thread = threading.Thread(target=slow)
        thread.start()
        srv.wait_for_output(r"/sleep\?s=1\.5 began")  # in flight: in the app
        os.kill(srv.pid, signal.SIGTERM)
        thread.join(10)
        assert result["response"][0] == 200 and result["response"][2] == b"slept 1.5\n"
        assert srv.proc.wait(10) == 0


def test_sigint_stops_at_once(model):
    with run_wizgy("-k", model, "testapp:app", env=ANNOUNCE) as srv:
        threading.Thread(target=lambda: exchange(srv.port, GET % b"/sleep?s=30", 40),
                         daemon=True).start()
        srv.wait_for_output(r"/sleep\?s=30 began")  # in the app: SIGINT does not wait for it
        started = time.monotonic()
        os.kill(srv.pid, signal.SIGINT)
        assert srv.proc.wait(10) == 0 and time.monotonic() - started < 5


def test_unix_socket(model, tmp_path):
    path = tmp_path / "wizgy.sock"
    with run_wizgy("-k", model, "-b", f"unix:{path}", "-b", "127.0.0.1:0", "testapp:app",
                   bind=False) as srv:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(GET % b"/hello")
            assert read_response(sock)[2] == b"Hello, World!\n"
        assert get(srv.port, b"/hello")[0] == 200
    assert not path.exists()  # removed at exit, as gunicorn does


def test_a_socket_file_a_newer_server_bound_is_left_alone(tmp_path):
    path = tmp_path / "wizgy.sock"
    with run_wizgy("-b", f"unix:{path}", "-b", "127.0.0.1:0", "testapp:app", bind=False):
        path.unlink()  # a new server takes the path over (a rolling restart)
        with socket.socket(socket.AF_UNIX) as newer:
            newer.bind(str(path))
            newer.listen()
        inode = path.stat().st_ino
    assert path.stat().st_ino == inode
