"""The request cycle and the connection without a server: a Connection over
socket.socketpair() served by a thread, a client on the other end; and a cycle over
an in-memory output. Apps are wrapped in wsgiref.validate.validator."""

from __future__ import annotations

import socket
import sys
import threading
from wsgiref.validate import validator

import pytest

from wizgy import config
from wizgy.connection import Connection
from wizgy.parked import ParkedConnection
from wizgy.context import ServerContext
from wizgy.cycle import DRAIN_LIMIT, RequestBody, RequestCycle
from wizgy.http import Limits, RequestParser
from wizgy.log import Logs
from wizgy.wsgi import InputStream, build_environ
from wizgy.wsgi.environ import ServerInfo


def echo(environ, start_response):
    """The method, path and body back, with the body's length."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    data = b"%s %s %s" % (environ["REQUEST_METHOD"].encode(), environ["PATH_INFO"].encode(),
                          body)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]


def ignore_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"ignored"]


def context(app, *args) -> ServerContext:
    settings = config.parse(["--timeout", "5", *args, "x:app"])
    return ServerContext(validator(app), settings, Logs("-", None, "critical"),
                         multithread=False, multiprocess=False)


class Served:
    """A Connection serving one end of a socketpair in a thread; the test is the client."""

    def __init__(self, app, *args) -> None:
        self.client, server = socket.socketpair()
        self.client.settimeout(5)
        self.ctx = context(app, *args)
        self.conn = Connection(server, None, self.ctx)
        self.thread = threading.Thread(target=self.conn.serve, daemon=True)
        self.thread.start()
        self.rest = b""

    def send(self, data: bytes) -> None:
        self.client.sendall(data)

    def response(self) -> tuple[bytes, bytes]:
        """(head, body) of the next response: a Content-Length body, read whole."""
        data = self.rest
        while b"\r\n\r\n" not in data:
            data += self.recv()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += self.recv()
        body, self.rest = body[:length], body[length:]  # (the rest: a next response)
        return head, body

    def recv(self) -> bytes:
        data = self.client.recv(65536)
        assert data, "the server closed the connection"
        return data

    def closed(self) -> bool:
        """The server ended the connection (the rest of what it sent is read first)."""
        try:
            while self.client.recv(65536):
                pass
        except ConnectionResetError:
            pass
        self.thread.join(5)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.client.close()
        self.thread.join(5)


@pytest.fixture
def served():
    made = []

    def make(app, *args) -> Served:
        made.append(Served(app, *args))
        return made[-1]

    yield make
    for s in made:
        s.close()
        assert not s.thread.is_alive()


GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def test_keep_alive_and_pipelined_requests_are_answered_in_order(served):
    s = served(echo)
    s.send(GET % b"one" + GET % b"two")
    assert s.response()[1] == b"GET /one "
    assert s.response()[1] == b"GET /two "
    s.send(b"POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    head, body = s.response()
    assert body == b"POST /three hello" and b"Connection: close" not in head
    assert s.conn.requests == 3


def test_chunked_body_is_read_whole_and_its_length_told(served):
    s = served(echo)
    s.send(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert s.response()[1] == b"POST /c abcde"


def test_connection_close_is_honoured(served):
    s = served(echo)
    s.send(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = s.response()
    assert b"Connection: close" in head and body == b"GET /bye "
    assert s.closed()


def test_a_bad_head_gets_400_and_the_connection_closes(served):
    s = served(echo)
    s.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
    head, body = s.response()
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    assert s.closed() and s.ctx.stats.responses_4xx == 1


def test_expect_continue_on_a_small_body_is_answered_by_the_server(served):
    s = served(echo)
    s.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert s.recv() == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.send(b"data")
    assert s.response()[1] == b"PUT /up data"


def test_a_small_unread_body_is_drained_and_the_connection_kept(served):
    s = served(ignore_body)
    s.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET % b"")
    assert s.response()[1] == b"ignored"
    assert s.response()[1] == b"ignored"
    assert s.conn.requests == 2


def test_a_big_unread_body_closes_the_connection(served):
    s = served(ignore_body)
    size = DRAIN_LIMIT + 1
    s.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    head, body = s.response()
    assert b"Connection: close" in head and body == b"ignored"
    s.client.sendall(b"x" * 1000)  # still sending: the server lingers, then closes
    assert s.closed()


def test_client_leaving_mid_body_does_not_reach_the_app(served):
    called = []

    def app(environ, start_response):
        called.append(True)
        return echo(environ, start_response)

    s = served(app)
    s.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly some")
    s.client.shutdown(socket.SHUT_WR)
    assert s.closed() and called == []


# --- the cycle alone, over an in-memory output ------------------------------------------


class MemoryOutput:
    """The output interface (cycle.BlockingOutput's) over a list."""

    behind = None
    backlog = b""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.send = self.sent.append

    def sendfile(self, file, offset, count):
        raise AssertionError("no files here")

    def flush(self) -> None:
        pass


INFO = ServerInfo(server_name="localhost", server_port="", remote_addr="", remote_port="",
                  url_scheme="http", root_path="", multithread=False, multiprocess=False,
                  errors=sys.stderr, trust_proxy=False)


def cycle_for(raw: bytes, app, *args) -> tuple[RequestCycle, MemoryOutput]:
    ctx = context(app, *args)
    parser = RequestParser(Limits())
    parser.receive(raw)
    request = parser.next_event()
    output = MemoryOutput()
    body = None
    if request.content_length or request.chunked:
        def recv(timeout):
            raise TimeoutError  # everything there is, is in the parser already
        body = RequestBody(request, parser, recv, output, ctx)
        wsgi_input = InputStream(body.read)
    else:
        parser.next_event()
        wsgi_input = InputStream(lambda size: b"")
    environ = build_environ(request, wsgi_input, INFO)
    return RequestCycle(ctx, output, parser, request, environ, body, None, ""), output


def test_a_cycle_keeps_alive_only_what_may_be_kept():
    cycle, output = cycle_for(GET % b"x", echo)
    assert cycle.run() is True and not cycle.linger
    assert b"".join(output.sent).endswith(b"GET /x ")
    cycle, _ = cycle_for(b"GET / HTTP/1.0\r\n\r\n", echo)
    assert cycle.run() is False  # HTTP/1.0 without keep-alive


def test_a_stop_begun_while_the_app_ran_closes_after_this_response():
    def stopping_app(environ, start_response):
        ctx.stopping = True  # as TERM would, while the app runs
        return echo(environ, start_response)

    cycle, output = cycle_for(GET % b"x", stopping_app)
    ctx = cycle.ctx
    assert cycle.run() is False
    assert b"Connection: close\r\n" in output.sent[0]


def test_a_body_the_client_never_finishes_is_answered_408_not_by_the_app():
    cycle, output = cycle_for(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", echo)
    assert cycle.run() is False
    assert output.sent[0].startswith(b"HTTP/1.1 408 ") and cycle.linger
    assert cycle.ctx.stats.responses_4xx == 1


def test_an_app_that_raises_gets_500_and_the_iterable_closed_once():
    closed = []

    class Broken:
        def __iter__(self):  # raises at the first item, not at iter()
            yield from self.items()

        def items(self):
            raise RuntimeError("boom")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Broken()

    cycle, output = cycle_for(GET % b"", app)
    assert cycle.run() is False
    assert output.sent[0].startswith(b"HTTP/1.1 500 ") and closed == [True]
    assert cycle.ctx.stats.responses_5xx == 1


# --- what a selector loop feeds a connection ----------------------------------------------


@pytest.fixture
def parked():
    """A ParkedConnection as a selector loop holds it: non-blocking, fed bytes by hand."""
    client, server = socket.socketpair()
    conn = ParkedConnection(server, None, context(echo))
    conn.set_nonblocking()
    yield conn, client
    conn.linger = False  # (a test that refused a request: no lingering wait)
    conn.close()
    client.close()


def test_feed_says_wait_begun_ready_and_serve_ready_answers(parked):
    from wizgy.parked import BEGUN, READY, WAIT
    conn, client = parked
    assert conn.feed(b"\r\n") is WAIT  # an empty line before a request is not one
    assert conn.feed(b"POST /p HTTP/1.1\r\nHost: x\r\n") is BEGUN  # --timeout from now
    assert conn.feed(b"Content-Length: 4\r\n") is WAIT
    assert conn.feed(b"\r\nab") is BEGUN  # the head is in, the body on its way
    assert conn.feed(b"cd" + GET % b"next") is READY
    assert conn.serve_ready() is True  # the POST, then the pipelined GET
    client.settimeout(5)
    data = b""
    while not data.endswith(b"GET /next "):
        data += client.recv(65536)
    assert b"POST /p abcd" in data and conn.requests == 2


def test_connections_reading_into_one_buffer_keep_their_own_bytes(parked):
    """A selector loop reads every parked connection into one buffer it reuses
    (readable(buffer)): what a connection keeps of a read must outlive the next
    connection's read over it."""
    from wizgy.parked import BEGUN, READ_SIZE, READY
    conn, client = parked
    client2, server2 = socket.socketpair()
    other = ParkedConnection(server2, None, context(echo))
    other.set_nonblocking()
    buffer = memoryview(bytearray(READ_SIZE))
    try:
        client.sendall(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        assert conn.readable(buffer) is BEGUN
        client2.sendall(b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nXYZXYZ")
        assert other.readable(buffer) is READY  # (over the first connection's bytes)
        client.sendall(b"def")
        assert conn.readable(buffer) is READY
        assert conn.serve_ready() is True and other.serve_ready() is True
        for sock, body in ((client, b"POST /first abcdef"), (client2, b"POST /second XYZXYZ")):
            sock.settimeout(5)
            data = b""
            while not data.endswith(body) and len(data) < 1000:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(body)
    finally:
        other.close()
        client2.close()


def test_feed_says_close_when_the_client_leaves_or_is_refused(parked):
    from wizgy.parked import CLOSE
    conn, client = parked
    assert conn.feed(b"") is CLOSE  # an idle connection ended by the client
    client2, server2 = socket.socketpair()
    refused = ParkedConnection(server2, None, context(echo))
    try:
        assert refused.feed(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n") is CLOSE
        client2.settimeout(5)
        assert client2.recv(65536).startswith(b"HTTP/1.1 400 ") and refused.linger
    finally:
        refused.linger = False
        refused.close()
        client2.close()


def test_a_request_parked_past_its_deadline_gets_408(parked):
    conn, client = parked
    conn.feed(b"GET / HTTP/1.1\r\nHo")
    conn.time_out()
    client.settimeout(5)
    assert client.recv(65536).startswith(b"HTTP/1.1 408 ")
