"""The request head over real sockets, on every model (issue 17, items 4, 5 and 7).

- A field RFC 9110 defines as a single value (Content-Type, Authorization, Range, ...)
  sent twice with different values gets 400; the same value twice reaches the app once.
- The whole head is bounded (--limit-request-head, WIZGY_LIMIT_REQUEST_HEAD, 64 KiB):
  431 above it, also for a head that never ends (refused as its bytes arrive).
- CONNECT gets 501 (RFC 9110 9.1, 15.6.2); other unknown methods reach the app.

Each refusal: the status, `Connection: close`, the connection closed, the request
behind it on the same connection never answered, and the server serving the next
client. The parser-level checks of the same rules are in test_http_parser.py (the
corpus files named here).
"""

from __future__ import annotations

import json

import pytest
from conftest import (
    AVAILABLE_MODELS,
    TESTS,
    connect,
    read_response,
    read_until_close,
    run_wizgy,
)
from corpus_loader import load_case

HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"

# Corpus files (tests/corpus/invalid) refused with their default limits.
REFUSED = [
    "content-type-twice-different",
    "content-type-twice-case",
    "authorization-twice-different",
    "range-twice-different",
    "user-agent-twice-different",
    "target-connect-authority",
    "target-connect-origin-form",
]


@pytest.fixture(scope="module", params=AVAILABLE_MODELS)
def server(request):
    with run_wizgy("-k", request.param, "--timeout", "60", "--keep-alive", "5",
                   "testapp:app") as srv:  # (keep-alive: the one-thread models default to 0)
        yield srv
    # the unknown method draws one WSGIWarning from wsgiref's validator; nothing else may
    assert srv.output().count("WSGIWarning") <= 1, srv.output()
    assert "Traceback" not in srv.output(), srv.output()


def send_and_read(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes. A server that refuses early may
    close before all is sent: what it answered is still read."""
    with connect(port, timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return read_until_close(sock, timeout)
        except ConnectionResetError:
            raise AssertionError("connection reset before the response could be read")


def assert_refused(port: int, response: bytes, status: int) -> None:
    assert response.startswith(b"HTTP/1.1 %d " % status), response[:120]
    assert b"\r\nConnection: close\r\n" in response
    assert response.count(b"HTTP/1.1 ") == 1, "the request behind it was answered"
    with connect(port) as sock:  # and the server still serves the next client
        sock.sendall(HELLO)
        assert read_response(sock)[0] == 200


def environ_of(port: int, raw: bytes) -> dict:
    with connect(port) as sock:
        sock.sendall(raw)
        status, _, body = read_response(sock)
    assert status == 200, body
    return json.loads(body)


def head_of(size: int, path: bytes = b"/hello") -> bytes:
    """A GET head of exactly `size` bytes (blank line included): 1 KiB fields, then
    one shorter field to make up the rest."""
    start = b"GET %s HTTP/1.1\r\nHost: t\r\n" % path
    fields, left = [], size - len(start) - 2
    while left > 1100:
        fields.append(b"X-%03d: %s\r\n" % (len(fields), b"v" * 1017))  # 1026 bytes
        left -= 1026
    fields.append(b"X-End: " + b"v" * (left - 9) + b"\r\n")
    head = start + b"".join(fields) + b"\r\n"
    assert len(head) == size
    return head


# --- item 4: a single-value field twice -------------------------------------------------


@pytest.mark.parametrize("name", REFUSED)
def test_refused_with_the_corpus_status_and_closed(server, name):
    case = load_case(TESTS / "corpus" / "invalid" / f"{name}.http")
    response = send_and_read(server.port, case.data + HELLO)
    assert_refused(server.port, response, case.expect_status)
    if case.expect_status == 400:
        assert b"with different values" in response  # the reason, in the body


def test_a_single_value_field_twice_with_the_same_value_reaches_the_app_once(server):
    environ = environ_of(server.port, b"POST /environ HTTP/1.1\r\nHost: t\r\n"
                         b"Content-Type: application/json\r\nUser-Agent: curl/8.5.0\r\n"
                         b"Accept: a/b\r\nContent-Type: application/json\r\n"
                         b"User-Agent: curl/8.5.0\r\nAccept: c/d\r\nContent-Length: 0\r\n\r\n")
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["HTTP_USER_AGENT"] == "curl/8.5.0"
    assert environ["HTTP_ACCEPT"] == "a/b, c/d"  # a list field: combined, as before


# --- item 7: CONNECT and unknown methods -------------------------------------------------


def test_an_unknown_method_reaches_the_app(server):
    # Only CONNECT, a tunnel, is refused: a WSGI app decides what PURGE means (Flask,
    # Django and Pyramid answer 405 to a method a route does not take).
    environ = environ_of(server.port, b"PURGE /environ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert environ["REQUEST_METHOD"] == "PURGE"


# --- item 5: the whole head ---------------------------------------------------------------


def test_80_fields_of_1_kib_get_431_with_the_default_limit(server):
    fields = b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 1024) for i in range(80))
    raw = b"GET /hello HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n"
    assert len(raw) > 82_500  # each field far under --limit-request-field_size
    with connect(server.port, timeout=10) as sock:
        # The first 64 KiB, then the rest only if no answer came: a server that has
        # refused would reset the connection on the bytes it never read, and the
        # client could lose the 431 (closing in stages is another part of issue 17).
        sock.sendall(raw[:65536])
        sock.settimeout(3)
        try:
            response = sock.recv(65536)
        except TimeoutError:
            sock.sendall(raw[65536:] + HELLO)
            response = b""
        response += read_until_close(sock, timeout=10)
    assert_refused(server.port, response, 431)
    assert b"longer than 65536 bytes" in response


def test_a_head_of_exactly_64_kib_is_served(server):
    with connect(server.port) as sock:
        sock.sendall(head_of(65536) + HELLO)  # and a keep-alive request behind it
        assert read_response(sock)[:3:2] == (200, b"Hello, World!\n")
        assert read_response(sock)[0] == 200


def test_a_head_that_never_ends_is_refused_once_the_limit_is_in(server):
    # No blank line ever comes (and --timeout is 60 s): the 431 can only come from the
    # bytes counted as they arrive. Exactly the limit is sent, so the server has read
    # all of it when it answers (no unread bytes to reset the connection with).
    raw = head_of(65536 + 2)[:-2]  # all but the blank line
    assert len(raw) == 65536 and b"\r\n\r\n" not in raw
    with connect(server.port, timeout=10) as sock:
        sock.sendall(raw)
        response = read_until_close(sock, timeout=10)
    assert_refused(server.port, response, 431)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_smaller_head_limit_by_flag_or_environment(how):
    args, env = ("--limit-request-head", "4096"), {}
    if how == "env":
        args, env = (), {"WIZGY_LIMIT_REQUEST_HEAD": "4096"}
    with run_wizgy(*args, "testapp:app", env=env) as srv:
        with connect(srv.port) as sock:
            sock.sendall(head_of(4096))
            assert read_response(sock)[0] == 200
        response = send_and_read(srv.port, head_of(4097) + HELLO)
        assert_refused(srv.port, response, 431)
        assert b"longer than 4096 bytes" in response
