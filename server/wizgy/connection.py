"""One client connection: the socket, its parser, and the blocking loop every model
shares. A model decides only *who* runs this, and when.

Call flow, blocking (iterative, fork, prefork workers; the threaded pool's threads):

    conn = Connection(sock, peer, ctx)
    conn.serve()                        # loop until the connection should close
      handle_request()                  # one request and its response
        _read_head()                    # recv() into the parser until a Request
        _respond(request)               # a body: read first, or streamed (RequestBody)
          RequestCycle(...).run()       # environ -> wsgi.run_app -> output (cycle.py)

A selector loop (models/selectorloop.py) parks connections and feeds them what
arrives instead: a ParkedConnection (parked.py) is this with a non-blocking half,
`feed(data)` and `serve_ready()`, which end in the same handle_request().

A selector loop reads a body whole while the connection is parked, so the app never
waits on a slow upload; the blocking models read a small Content-Length body whole
before the app runs too (_await_body), within --timeout.

Timeouts: a new request's first byte may take `keep_alive` seconds; once it starts,
the whole head must arrive within `timeout` seconds (else 408); each body read (else
408, if the response has not begun) and each send may block at most `timeout` seconds.
"""

from __future__ import annotations

import socket
import time

from .compat import TIMEOUT
from .context import ServerContext
from .cycle import CONTINUE, BlockingOutput, RequestBody, RequestCycle, Spool, answer_error
from .http import NEED_DATA, ClientDisconnected, ConnectionClosed, HTTPError, Request, \
    RequestParser
from .wsgi import InputStream, ServerInfo, build_environ

# A selector loop holds a request back, parked, until its body has all arrived, so the
# app never waits on a slow client's upload: a Content-Length body of up to this many
# bytes waits in the parser's buffer, a bigger or chunked one is read into a Spool.
BUFFERED_BODY = 1 << 16
# Graceful stop (TERM, HUP, TTOU, --max-requests): how long a keep-alive connection
# whose last response did not say close may still send its next request.
DRAIN_IDLE = 1.0
# Closing on a client that may still be sending (after an error response, or with a body
# not read): RFC 9112 9.6 lingering close. Shut down writing (the FIN follows the
# response), then read and discard until the client closes, LINGER_IDLE passes with
# nothing from it, or LINGER_TIME in all; else close() on unread bytes sends a reset,
# and a reset can destroy the response before the client has read it.
LINGER_TIME = 2.0
LINGER_IDLE = 1.0
EMPTY_INPUT = InputStream(lambda size: b"")  # wsgi.input of every bodiless request


class Connection:
    """A client's socket and request stream; each request is a RequestCycle."""

    def __init__(self, sock: socket.socket, peer, ctx: ServerContext, local=None,
                 output=BlockingOutput) -> None:
        """`local` is the address the client connected to, when the caller knows it
        (a listener bound to one address); otherwise getsockname() tells. `output` is
        how responses go out: the model picks (evloop's: BackloggedOutput)."""
        self.sock = sock
        self.ctx = ctx
        self.parser = RequestParser(ctx.limits)
        self.requests = 0
        settings = ctx.settings
        self.timeout = settings.timeout or None
        self.keep_alive_timeout = settings.keep_alive
        self.output = output(sock, self.timeout)
        if type(peer) is tuple:  # TCP, IPv4 or IPv6 (sock.family would cost an enum lookup)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            remote_addr, remote_port = peer[0], str(peer[1])
            local = local or sock.getsockname()
            server_name, server_port = local[0], str(local[1])
        else:
            remote_addr, remote_port = "", ""
            server_name, server_port = "localhost", ""
        self.info = ServerInfo(
            server_name=server_name, server_port=server_port,
            remote_addr=remote_addr, remote_port=remote_port,
            url_scheme="http", root_path=settings.root_path,
            multithread=ctx.multithread, multiprocess=ctx.multiprocess,
            errors=ctx.logs.errors_stream, trust_proxy=ctx.trusts(remote_addr),
        )
        self.pending: Request | None = None  # a head a selector loop read (take_head)
        self.spool: Spool | None = None  # a body read whole first (a chunked one; parked)
        self.cycle: RequestCycle | None = None  # the request being answered (or paused)
        self.linger = False  # close lingering: the client may still be sending
        # A selector loop's: when its lingering close ends (0: not begun; set by
        # ParkedConnection.start_linger). Here, not a class default: the loop reads it
        # on every event, and CPython 3.11 reads a class default the slow, generic way.
        self.lingering = 0.0
        # What a selector watches (selectors and epoll take any object with fileno()):
        # the socket's own method, so registering costs no Python call.
        self.fileno = sock.fileno

    # the loop ------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            while self.handle_request():
                pass
        finally:
            self.close()

    def handle_request(self) -> bool:
        """Serve one request. Returns False when the connection must now be closed."""
        try:
            request = self.pending
            if request is None:
                request = self._read_head()
                if request is None:
                    return False
            else:
                self.pending = None
            return self._respond(request)
        except HTTPError as error:
            self.refuse(error)
            return False
        except (ClientDisconnected, ConnectionError, *TIMEOUT) as error:
            self.ctx.logs.error.debug("connection from %s closed: %s", self.info.remote_addr,
                                      error or type(error).__name__)
            return False

    def _read_head(self) -> Request | None:
        parser = self.parser
        deadline = None
        while True:
            event = parser.next_event()
            if event is not NEED_DATA:
                if type(event) is ConnectionClosed:
                    return None
                return event
            if not parser.has_buffered_data and deadline is None:
                # Waiting for a request to begin: an idle keep-alive may just end.
                try:
                    self._recv(self._idle_timeout())
                except TIMEOUT:
                    return None
                continue
            if deadline is None and self.timeout:
                deadline = time.monotonic() + self.timeout
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise HTTPError(408, "request head not received in time")
            try:
                self._recv(remaining)
            except TIMEOUT:
                raise HTTPError(408, "request head not received in time") from None

    def _respond(self, request: Request) -> bool:
        """Make the request's cycle: its body read first or streamed, its environ."""
        self.requests += 1
        if request.chunked and self.spool is None and not request.expect_continue:
            self._read_spool()
        spool = body = None
        if self.spool is not None:  # read whole (while the connection was parked)
            spool = self.spool
            wsgi_input = self._spooled_input(request)
        elif request.chunked or request.content_length:
            length = request.content_length
            if length and length <= BUFFERED_BODY and self.parser.buffered < length:
                if request.expect_continue:
                    self._answer_expect(request)
                if not self._await_body(request, length):
                    return False  # the client left mid-body: nothing to answer
            body = RequestBody(request, self.parser, self._recv, self.output, self.ctx)
            wsgi_input = InputStream(body.read)
        else:
            self.parser.next_event()  # the EndOfMessage of a request without a body
            wsgi_input = EMPTY_INPUT
        environ = build_environ(request, wsgi_input, self.info)
        if spool is not None and request.chunked:  # its length is known now: Django
            environ["CONTENT_LENGTH"] = str(spool.size)  # reads forms only by it
        self.cycle = cycle = RequestCycle(self.ctx, self.output, self.parser, request,
                                          environ, body, spool, self.info.remote_addr)
        keep = cycle.run()
        self.linger = cycle.linger
        if cycle.paused is None:
            self.cycle = None
        return keep

    def refuse(self, error: HTTPError) -> None:
        """The peer sent something we refuse: a short 4xx/5xx, then we close."""
        self.ctx.logs.error.info("refused request from %s: %s", self.info.remote_addr, error)
        if self.cycle is not None and self.cycle.response.headers_sent:
            self.ctx.stats.count(error.status)
            return  # mid-response: all we can do is close
        if answer_error(self.ctx, self.output, error.status, error.message):
            self.linger = True  # what follows the bad bytes may be on its way

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.cycle is not None:  # the client left (or was closed) mid-response
            cycle, self.cycle = self.cycle, None
            cycle.close()
        if self.linger:
            self._linger()
        try:
            self.sock.close()
        except OSError:
            pass

    def _linger(self) -> None:
        """The blocking models' lingering close (LINGER_TIME at the most)."""
        self.linger = False
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + LINGER_TIME
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(min(left, LINGER_IDLE))
                if not sock.recv(65536):
                    return
        except OSError:  # TimeoutError too: the client has gone quiet
            pass

    # reading -------------------------------------------------------------------------
    def _idle_timeout(self) -> float | None:
        """How long to wait for a next request to begin: --keep-alive after a response
        (DRAIN_IDLE once a graceful stop has begun), --timeout for the first."""
        if not self.requests:
            return self.timeout
        if self.ctx.stopping:
            return min(self.keep_alive_timeout, DRAIN_IDLE)
        return self.keep_alive_timeout

    def _recv(self, timeout: float | None) -> None:
        self.output.set_timeout(timeout)
        data = self.sock.recv(65536)
        self.parser.receive(data)

    def _await_body(self, request: Request, length: int) -> bool:
        """The blocking models: a Content-Length body of up to BUFFERED_BODY is read
        whole before the app runs, as the selector loops do, so that a client that
        leaves mid-upload costs one log line, not an app call that fails on its
        wsgi.input (a traceback and a 500 in every framework). The body must be here
        within --timeout in all (else 408), however steadily it is dribbled: a worker
        is not held longer for 64 KiB. False when the client left."""
        parser = self.parser
        deadline = time.monotonic() + (self.timeout or 3600.0)
        try:
            while parser.buffered < length:
                if (remaining := deadline - time.monotonic()) <= 0:
                    raise TimeoutError
                self.output.set_timeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    self.left_mid_body(request, parser.buffered)
                    return False
                parser.receive(data)
        except TIMEOUT:
            raise HTTPError(408, "request body not received in time") from None
        return True

    def _read_spool(self) -> None:
        """The models that read a body as the app asks: a chunked one is read whole now
        (each read at most --timeout), so that its length can be told (CONTENT_LENGTH)."""
        self.spool = spool = Spool()
        try:
            while not spool.fill(self.parser, self.ctx.progress):
                self._recv(self.timeout)
        except TIMEOUT:
            spool.error = HTTPError(408, "request body not received in time")

    def _spooled_input(self, request: Request) -> InputStream:
        spool, self.spool = self.spool, None
        if spool.error is not None:
            spool.close()
            if isinstance(spool.error, ClientDisconnected):
                self.left_mid_body(request, spool.size)
            raise spool.error  # answered (HTTPError) or the client has gone (handle_request)
        return InputStream(spool.read)

    def _answer_expect(self, request: Request) -> None:
        """Expect: 100-continue on a body the server reads before the app runs: the
        server asks for it now (RFC 9110 10.1.1 lets it), as waitress does. Were the app
        to ask, a client trickling the body would hold the app, and so an evloop worker
        and everyone on it, and one leaving mid-body would reach the app as an error.
        Answered, the expectation is gone: the rest treats it as any body."""
        self.output.send(CONTINUE)
        request.expect_continue = False

    def left_mid_body(self, request: Request, received: int) -> None:
        """The client closed its connection before its request's body was all here:
        the app is not called (there is no one to answer), one line says so."""
        size = "chunked" if request.chunked else f"{request.content_length}-byte"
        self.ctx.logs.error.info("client %s left %d bytes into the %s body of %s %s: "
                                 "not passed to the app", self.info.remote_addr, received,
                                 size, request.method, request.target)

