"""The WSGI layer in memory: a Response writes to a list, wsgi.input reads from bytes.
No socket, no server: what framing, input and close-once do, said directly."""

from __future__ import annotations

import io
from wsgiref.validate import validator

import pytest

from wizgy.http import Request
from wizgy.wsgi import AppError, FileWrapper, InputStream, Response, build_environ, run_app
from wizgy.wsgi.environ import ServerInfo


def request(method="GET", version="HTTP/1.1", keep_alive=True, headers=(), target="/"):
    path, _, query = target.partition("?")
    return Request(method, target, path, query, version, tuple(headers), None, False,
                   keep_alive, False, "example.org")


INFO = ServerInfo(server_name="127.0.0.1", server_port="8000", remote_addr="10.0.0.1",
                  remote_port="5555", url_scheme="http", root_path="", multithread=False,
                  multiprocess=False, errors=io.StringIO(), trust_proxy=False)


def serve(app, req=None, at_head=None, validate=True):
    """Run `app` on one request; return (the bytes sent, the Response). The validator
    wraps the app's iterable: `validate=False` keeps a list a list (the one-piece path)."""
    req = req or request()
    sent: list[bytes] = []
    resp = Response(req, sent.append, req.keep_alive, at_head)
    environ = build_environ(req, InputStream(lambda size: b""), INFO)
    assert run_app(validator(app) if validate else app, environ, resp) is None
    return b"".join(sent), resp


def app_of(status="200 OK", headers=(("Content-Type", "text/plain"),), body=(b"hello",)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return list(body)
    return app


def test_one_piece_body_gets_its_length_and_keeps_the_connection():
    data, resp = serve(app_of(), validate=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 5" in head and b"Date: " in head and b"Server: wizgy" in head
    assert body == b"hello" and resp.keep_alive and b"Connection" not in head


def test_many_pieces_on_http11_are_chunked():
    data, resp = serve(app_of(body=[b"ab", b"", b"cde"]))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n" and resp.keep_alive


def test_many_pieces_on_http10_end_with_the_close():
    data, resp = serve(app_of(body=[b"ab", b"cd"]), request(version="HTTP/1.0"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"chunked" not in head and body == b"abcd"
    assert not resp.keep_alive


def test_head_says_the_length_and_sends_no_body():
    data, _ = serve(app_of(), request(method="HEAD"), validate=False)
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: 5\r\n" in data


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_content_statuses_carry_no_body_and_no_length(status):
    data, _ = serve(app_of(status=status, headers=(), body=[b""]))
    assert data.endswith(b"\r\n\r\n") and b"Content-Length" not in data


def test_a_body_shorter_than_declared_closes_the_connection():
    data, resp = serve(app_of(headers=[("Content-Type", "text/plain"), ("Content-Length", "10")],
                              body=[b"abc"]))
    assert data.endswith(b"\r\n\r\nabc") and not resp.keep_alive


def test_the_server_decision_at_head_time_adds_connection_close():
    decided = []

    def at_head():
        decided.append(True)
        return False  # e.g. a graceful stop began while the app ran

    data, resp = serve(app_of(), at_head=at_head)
    assert decided == [True] and b"Connection: close\r\n" in data and not resp.keep_alive


def test_an_error_at_head_time_overrides_the_app():
    def at_head():
        raise AppError("a bad body surfaced")

    with pytest.raises(AppError):
        serve(app_of(), at_head=at_head)


def test_the_iterable_is_closed_exactly_once_even_when_it_raises():
    closed = []

    class Body:
        def __iter__(self):
            yield b"one"
            raise RuntimeError("broken mid-body")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    resp = Response(request(), [].append, True)
    environ = build_environ(request(), InputStream(lambda size: b""), INFO)
    with pytest.raises(RuntimeError):
        run_app(app, environ, resp)
    assert closed == [True] and resp.headers_sent


def test_hop_by_hop_headers_from_the_app_are_refused():
    environ = build_environ(request(), InputStream(lambda size: b""), INFO)
    resp = Response(request(), [].append, True)
    with pytest.raises(AppError, match="hop-by-hop"):  # (no validator: it would refuse first)
        run_app(app_of(headers=[("Connection", "close")]), environ, resp)


def test_input_stream_reads_lines_and_sizes_across_pieces():
    pieces = [b"first line\nsec", b"ond line\n", b"tail"]
    stream = InputStream(lambda size: pieces.pop(0) if pieces else b"")
    assert stream.readline() == b"first line\n"
    assert stream.read(3) == b"sec"
    assert list(stream) == [b"ond line\n", b"tail"]
    assert stream.read() == b""


def test_environ_carries_the_request_and_the_connection():
    req = request(target="/a%20b?x=1", headers=[("X-Thing", "1"), ("x-thing", "2"),
                                                  ("Content-Type", "text/plain")])
    environ = build_environ(req, InputStream(lambda size: b""), INFO)
    assert environ["PATH_INFO"] == "/a b" and environ["QUERY_STRING"] == "x=1"
    assert environ["HTTP_X_THING"] == "1, 2" and environ["CONTENT_TYPE"] == "text/plain"
    assert environ["SERVER_NAME"] == "example.org" and environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["wsgi.file_wrapper"] is FileWrapper


@pytest.mark.parametrize("host, server_name, server_port", [
    ("example.org:8080", "example.org", "8080"),
    ("example.org", "example.org", "8000"),  # no port: the connection's
    ("[::1]:8080", "[::1]", "8080"),
    ("[::1]", "[::1]", "8000"),
    ("example.org:", "example.org:", "8000"),  # not a port: the whole Host is the name
    (":8080", ":8080", "8000"),
    ("example.org:80x", "example.org:80x", "8000"),
    ("", "127.0.0.1", "8000"),  # an empty Host (HTTP/1.1 allows it): the connection's
])
def test_server_name_and_port_come_from_host(host, server_name, server_port):
    """SERVER_NAME/SERVER_PORT from Host, the same on a second request (the split is
    cached by Host) as on the first."""
    req = Request("GET", "/", "/", "", "HTTP/1.1", (("Host", host),), None, False, True,
                  False, host)
    for _ in range(2):
        environ = build_environ(req, InputStream(lambda size: b""), INFO)
        assert (environ["HTTP_HOST"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == \
            (host, server_name, server_port)


def test_a_repeated_start_is_answered_from_what_the_app_sends_now():
    """start_response remembers the last start it checked (and caches all it checked):
    an app that changes the list it passed before, or alternates between starts, gets
    the head of what it passes each time; a bad header is refused even right after a
    good start."""
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5")]

    def app(environ, start_response):
        start_response(environ["QUERY_STRING"] or "200 OK", headers)
        return [b"hello"]

    heads = []
    for query, length, kind in [("", "5", "text/plain"), ("", "5", "text/html"),
                                ("404 Not Found", "5", "text/html"), ("", "3", "text/html"),
                                ("", "3", "text/html")]:
        headers[:] = [("Content-Type", kind), ("Content-Length", length)]
        sent, resp = serve(app, request(target="/?" + query if query else "/"),
                           validate=False)
        heads.append(sent.split(b"\r\n\r\n")[0].split(b"\r\n"))
    assert [(h[0], h[1], h[2]) for h in heads] == [
        (b"HTTP/1.1 200 OK", b"Content-Type: text/plain", b"Content-Length: 5"),
        (b"HTTP/1.1 200 OK", b"Content-Type: text/html", b"Content-Length: 5"),
        (b"HTTP/1.1 404 Not Found", b"Content-Type: text/html", b"Content-Length: 5"),
        (b"HTTP/1.1 200 OK", b"Content-Type: text/html", b"Content-Length: 3"),
        (b"HTTP/1.1 200 OK", b"Content-Type: text/html", b"Content-Length: 3"),
    ]
    headers.append(("Bad Name", "x"))
    with pytest.raises(AppError, match="invalid header name"):
        serve(app, validate=False)
    headers.pop()
    headers.append(("Content-Length", "5"))
    with pytest.raises(AppError, match="more than one Content-Length"):
        serve(app, validate=False)
