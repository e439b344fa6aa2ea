"""One client connection, served with blocking socket calls: the piece every model shares.

Call flow (a model decides only *who* runs this, and when):

    conn = Connection(sock, peer, ctx)
    conn.serve()                        # loop until the connection should close
      handle_request()                  # one request and its response
        _read_head()                    # recv() into the parser until a Request
        _respond(request)               # environ + wsgi.input -> wsgi.run_app -> send
          _read_spool()                 # a chunked body: read whole first (a Spool)
          _read_body(n)                 # else wsgi.input pulls body bytes on demand
        _finish_body()                  # drain what the app left unread, or close

A model that parks idle keep-alive connections elsewhere (the threaded one) calls
`handle_request()` itself and checks `parser.has_buffered_data` for pipelining; it
also reads each body whole while the connection is parked (`body_ready()`).

Timeouts: a new request's first byte may take `keep_alive` seconds; once it starts,
the whole head must arrive within `timeout` seconds (else 408); each body read (else
408, if the response has not begun) and each send may block at most `timeout` seconds.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable

from . import http
from .compat import TIMEOUT
from .context import ServerContext
from .http import NEED_DATA, ClientDisconnected, HTTPError, Request, RequestParser, \
    error_response
from .wsgi import AppError, InputStream, Response, ServerInfo, build_environ, resume, run_app

DRAIN_LIMIT = 1 << 16  # unread body bytes we read and discard to keep a connection
# A selector loop holds a request back, parked, until its body has all arrived, so the
# app never waits on a slow client's upload: a Content-Length body of up to this many
# bytes waits in the parser's buffer, a bigger or chunked one is read into a Spool.
BUFFERED_BODY = 1 << 16
SPOOL_MEMORY = 1 << 20  # a Spool's bytes in memory; past that, in a temporary file
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


class Spool:
    """A request body a selector loop reads whole before the app runs, as waitress,
    meinheld and bjoern do: a slow upload then costs a parked connection, not the
    worker. The parser's pieces are kept as they are (no copy) up to SPOOL_MEMORY
    bytes; past that they go to a temporary file, --max-body bytes at most."""

    def __init__(self) -> None:
        self.parts: deque[bytes] = deque()
        self.size = 0
        self.file = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is None:
            if self.size <= SPOOL_MEMORY:
                self.parts.append(data)
                return
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self.file.writelines(self.parts)
            self.parts.clear()
        self.file.write(data)

    def rewind(self) -> None:
        if self.file is not None:
            self.file.seek(0)

    def read(self, size: int) -> bytes:
        """The next piece of the body (whatever its size; InputStream keeps the rest),
        b"" at its end."""
        if self.file is not None:
            return self.file.read(size)
        return self.parts.popleft() if self.parts else b""

    def close(self) -> None:
        self.parts.clear()
        if self.file is not None:
            self.file.close()



class Connection:
    def __init__(self, sock: socket.socket, peer, ctx: ServerContext, local=None) -> None:
        """`local` is the address the client connected to, when the caller knows it
        (a listener bound to one address); otherwise getsockname() tells."""
        self.sock = sock
        self.ctx = ctx
        self.parser = RequestParser(ctx.limits)
        self.requests = 0
        settings = ctx.settings
        self.timeout = settings.timeout or None
        self._sock_timeout: float | None = -1.0  # what the socket is set to now
        self.keep_alive_timeout = settings.keep_alive
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
        # per-request state
        self.pending: Request | None = None  # a head a selector loop read (take_head)
        self._request: Request | None = None
        self._response: Response | None = None
        self._body_done = True
        self._body_error: HTTPError | None = None
        self._sent_continue = False
        self.spool: Spool | None = None  # the pending request's body, read while parked
        self._spool_error: Exception | None = None  # what was wrong with that body
        # evloop lets _send() leave what a slow reader has not taken yet in `backlog`,
        # to send when epoll says it can, rather than wait in sendall() with every
        # other client of the loop waiting too; past `write_behind` bytes, the app's
        # iterable is paused (`paused`: the wsgi.Paused and the request's state) until
        # the client catches up.
        self.write_behind = 0
        self.backlog: bytes | bytearray = b""
        self.paused: tuple | None = None
        self.linger = False  # close lingering: the client may still be sending
        self.lingering = 0.0  # a selector loop's: when its lingering ends (0: not begun)

    # the loop ------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            while self.handle_request():
                pass
        finally:
            self.close()

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
        if self.paused is not None:  # the client left (or was closed) mid-response
            paused, *_, spool = self.paused  # (paused, request, environ, resp, started, spool)
            self.paused = None
            if spool is not None:
                spool.close()
            try:
                paused.close()  # PEP 3333: the app's close() is owed all the same
            except Exception:  # noqa: BLE001 (the app's own error, logged)
                self.ctx.logs.error.exception("app's close() raised")
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

    def start_linger(self) -> bool:
        """A selector loop's lingering close: shut down writing now; the loop then
        calls discard() as the client's bytes arrive. False if the socket has gone."""
        self.linger = False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.set_nonblocking()
        self.lingering = time.monotonic() + LINGER_TIME
        return True

    def discard(self) -> bool:
        """Read and drop what a lingering client sent. False once it is time to close."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return bool(data) and time.monotonic() < self.lingering

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
            keep = self._respond(request)
            if self.paused is None:
                self._response = None  # done: refuse() answers a bad next request again
            return keep
        except HTTPError as error:
            self.refuse(error)
            return False
        except (ClientDisconnected, ConnectionError, *TIMEOUT) as error:
            self.ctx.logs.error.debug("connection from %s closed: %s", self.info.remote_addr,
                                      error or type(error).__name__)
            return False

    # for a selector loop: a request read without blocking --------------------------------
    def take_head(self) -> bool:
        """The parser holds a whole head (head_complete() said so): parse it into
        `pending`, for handle_request() to serve. False when the connection must close
        now (the head was refused and answered, or the peer has gone)."""
        try:
            event = self.parser.next_event()
        except HTTPError as error:
            self.refuse(error)
            return False
        if type(event) is http.ConnectionClosed:
            return False
        if event is not NEED_DATA:
            self.pending = event
        return True

    @property
    def request_begun(self) -> bool:
        """Part of a next request is here: the first bytes of a head, or a whole head
        whose body is still on its way."""
        return self.pending is not None or self.parser.head_begun

    def body_ready(self) -> bool:
        """For a selector loop: can the pending request be served without waiting on
        its body? A Content-Length body of up to 64 KiB must all be in the parser's
        buffer; a bigger or chunked one is taken out of it into the spool, and must
        have ended. After Expect: 100-continue the server asks for the body itself
        (_answer_expect). A bad body is ready too: it is answered when served."""
        request = self.pending
        length = request.content_length
        if not (length or request.chunked):
            return True
        if request.expect_continue:
            self._answer_expect(request)
        if length and length <= BUFFERED_BODY:
            return self.parser.buffered >= length
        return self._spool()

    def _answer_expect(self, request: Request) -> None:
        """Expect: 100-continue on a body the server reads before the app runs: the
        server asks for it now (RFC 9110 10.1.1 lets it), as waitress does. Were the app
        to ask, a client trickling the body would hold the app, and so an evloop worker
        and everyone on it, and one leaving mid-body would reach the app as an error.
        Answered, the expectation is gone: the rest treats it as any body."""
        self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.expect_continue = False

    def has_unread_bytes(self) -> bool:
        """For a selector loop about to close an idle connection: did a request arrive
        that the loop has not read yet (it was busy in the app past the deadline)?"""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except OSError:  # BlockingIOError: nothing there
            return False

    def _spool(self) -> bool:
        """Take what the parser holds of the body into the spool. True once the body
        has ended, or turned out bad (then `_spool_error` says how)."""
        if self.spool is None:
            self.spool = Spool()
        parser, progress = self.parser, self.ctx.progress
        try:
            while (event := parser.next_event()) is not NEED_DATA:
                if type(event) is not http.Data:  # EndOfMessage
                    self.spool.rewind()
                    return True
                self.spool.write(event.data)
                if progress is not None:
                    progress()
        except (HTTPError, ClientDisconnected) as error:
            self._spool_error = error
            return True
        return False

    def _read_spool(self) -> None:
        """The models that read a body as the app asks: a chunked one is read whole now
        (each read at most --timeout), so that its length can be told (CONTENT_LENGTH)."""
        try:
            while not self._spool():
                self._recv(self.timeout)
        except TIMEOUT:
            self._spool_error = HTTPError(408, "request body not received in time")

    def _spooled_input(self) -> InputStream:
        spool, error = self.spool, self._spool_error
        self.spool = self._spool_error = None
        if error is not None:
            spool.close()
            if isinstance(error, ClientDisconnected):
                self.left_mid_body(spool.size)
            raise error  # answered (HTTPError) or the client has gone, as in handle_request
        return InputStream(spool.read)

    def _await_body(self, length: int) -> bool:
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
                self._set_timeout(remaining)
                data = self.sock.recv(65536)
                if not data:
                    self.left_mid_body(parser.buffered)
                    return False
                parser.receive(data)
        except TIMEOUT:
            raise HTTPError(408, "request body not received in time") from None
        return True

    def left_mid_body(self, received: int) -> None:
        """The client closed its connection before its request's body was all here:
        the app is not called (there is no one to answer), one line says so."""
        request = self.pending or self._request  # (parked: the previous one is _request)
        size = "chunked" if request.chunked else f"{request.content_length}-byte"
        self.ctx.logs.error.info("client %s left %d bytes into the %s body of %s %s: "
                                 "not passed to the app", self.info.remote_addr, received,
                                 size, request.method, request.target)

    def _idle_timeout(self) -> float | None:
        """How long to wait for a next request to begin: --keep-alive after a response
        (DRAIN_IDLE once a graceful stop has begun), --timeout for the first."""
        if not self.requests:
            return self.timeout
        if self.ctx.stopping:
            return min(self.keep_alive_timeout, DRAIN_IDLE)
        return self.keep_alive_timeout

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._sock_timeout:  # settimeout() is a syscall; skip repeats
            self.sock.settimeout(timeout)
            self._sock_timeout = timeout

    def _recv(self, timeout: float | None) -> None:
        self._set_timeout(timeout)
        data = self.sock.recv(65536)
        self.parser.receive(data)

    def _read_head(self) -> Request | None:
        parser = self.parser
        deadline = None
        while True:
            event = parser.next_event()
            if event is not NEED_DATA:
                if type(event) is http.ConnectionClosed:
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

    # one request ------------------------------------------------------------------------
    def _respond(self, request: Request) -> bool:
        ctx = self.ctx
        self.requests += 1
        self._request = request
        if request.chunked and self.spool is None and not request.expect_continue:
            self._read_spool()
        spool = self.spool
        if spool is not None:  # read whole (while the connection was parked)
            wsgi_input = self._spooled_input()
            self._body_done = True
            check = None
        elif request.chunked or request.content_length:
            length = request.content_length
            if length and length <= BUFFERED_BODY and self.parser.buffered < length:
                if request.expect_continue:
                    self._answer_expect(request)
                if not self._await_body(length):
                    return False  # the client left mid-body: nothing to answer
            self._body_done = False
            self._body_error = None
            self._sent_continue = False
            wsgi_input = InputStream(self._read_body)
            check = self._check_body  # a bad body found while the app ran overrides it
        else:
            self.parser.next_event()  # the EndOfMessage of a request without a body
            self._body_done = True
            wsgi_input = EMPTY_INPUT
            check = None
        environ = build_environ(request, wsgi_input, self.info)
        if spool is not None and request.chunked:  # its length is known now: Django
            environ["CONTENT_LENGTH"] = str(spool.size)  # reads forms only by it
        keep_alive = request.keep_alive and ctx.keep_alive and not ctx.stopping
        resp = Response(request, self._send, keep_alive=keep_alive, check=check, ctx=ctx)
        self._response = resp
        started = time.perf_counter() if ctx.logs.access_enabled else 0.0
        return self._run(None, request, environ, resp, started, spool)

    def resume(self) -> bool:
        """evloop: the client has taken the backlog; go on with the paused response."""
        paused, *state = self.paused
        self.paused = None
        keep = self._run(paused, *state)
        if self.paused is None:
            self._response = None
        return keep

    def _run(self, paused, request: Request, environ: dict, resp: Response, started: float,
             spool: Spool | None) -> bool:
        """run_app(), or resume() a paused response; then what follows a response."""
        ctx = self.ctx
        logs = ctx.logs
        behind = self._behind if self.write_behind else None
        try:
            if paused is None:
                paused = run_app(ctx.app, environ, resp, self._sendfile, behind)
            else:
                paused = resume(paused, resp, behind)
        except (ConnectionError, *TIMEOUT):
            keep = False  # the client left while we were answering
        except Exception as error:
            status = self._app_failed(request, resp, error)
            self.linger = status != 0 and not self._body_done
            if logs.access_enabled and status:  # the 500 (or 4xx) is counted there too
                logs.access(environ, status, resp.bytes_sent, time.perf_counter() - started)
            keep = False
        else:
            if paused is not None:  # the client is behind: go on when it catches up
                self.paused = (paused, request, environ, resp, started, spool)
                return True
            # The one keep-alive decision was taken as the head went out (Response.frame:
            # the client's wish, --keep-alive, a stop begun); a response that did not say
            # close keeps its promise even if a stop began since: the client may be
            # sending its next request already, and that one is answered with close.
            keep = resp.keep_alive and (self._body_done or self._finish_body())
            if not keep and not (self._body_done and self.parser.buffered == 0):
                self.linger = True  # the rest of its body, or more requests, may be coming
            ctx.stats.count(resp.status_code)
            if logs.access_enabled:
                logs.access(environ, resp.status_code, resp.bytes_sent,
                            time.perf_counter() - started)
        if spool is not None:
            spool.close()  # its temporary file, if it had one, goes now
        return keep

    def _behind(self) -> bool:
        return len(self.backlog) > self.write_behind

    def _app_failed(self, request: Request, resp: Response, error: Exception) -> int:
        """Log what went wrong and answer it if nothing was sent yet. Returns the status
        the client got (0: the client is gone)."""
        if isinstance(error, HTTPError):  # a bad body surfaced while the app read it
            status, message = error.status, error.message
            self.ctx.logs.error.info("refused %s %s from %s: %s", request.method,
                                     request.target, self.info.remote_addr, error)
        elif isinstance(error, ClientDisconnected):
            return 0
        else:
            status, message = 500, "The server could not complete your request."
            what = "broke the WSGI contract" if isinstance(error, AppError) else "raised"
            self.ctx.logs.error.error("app %s on %s %s", what, request.method, request.target,
                                      exc_info=sys.exc_info())
        self.ctx.stats.count(status)
        if resp.headers_sent:
            return resp.status_code  # cut short: all the client can be told is a close
        try:
            self._send(error_response(status, message, time.time()))
        except OSError:
            return 0
        return status

    def refuse(self, error: HTTPError) -> None:
        """The peer sent something we refuse: a short 4xx/5xx, then we close."""
        self.ctx.stats.count(error.status)
        self.ctx.logs.error.info("refused request from %s: %s", self.info.remote_addr, error)
        if self._response is not None and self._response.headers_sent:
            return  # mid-response: all we can do is close
        try:
            self._send(error_response(error.status, error.message, time.time()))
        except OSError:
            return
        self.linger = True  # what follows the bad bytes may be on its way

    # the body -------------------------------------------------------------------------
    def _read_body(self, size: int, deadline: float | None = None) -> bytes:
        if self._body_done:
            return b""
        request, parser = self._request, self.parser
        if request.expect_continue and not self._sent_continue:
            self._sent_continue = True
            if not self._response.headers_sent:
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")  # RFC 9110 10.1.1
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    if self.backlog:  # what the client may be waiting for before it sends
                        self.flush()
                    if deadline is None:
                        self._recv(self.timeout)
                    elif (remaining := deadline - time.monotonic()) > 0:
                        self._recv(remaining)
                    else:
                        raise TimeoutError("body not drained in time")
                elif type(event) is http.Data:
                    if self.ctx.progress is not None:
                        self.ctx.progress()
                    if parser.body_ended:  # the app read to Content-Length: the body is
                        parser.next_event()  # whole without its asking for EOF, and the
                        self._body_done = True  # connection may stay open
                    return event.data
                else:  # EndOfMessage
                    self._body_done = True
                    return b""
        except HTTPError as error:
            self._body_error = error
            raise
        except TIMEOUT:  # the app waited --timeout for the next of the body
            if deadline is not None:
                raise  # draining after the response: just close
            self._body_error = HTTPError(408, "request body not received in time")
            raise self._body_error from None

    def _check_body(self) -> None:
        """Called as response headers go out: a bad body overrides the app's answer, and
        a body too big to drain afterwards means this response must say it will close."""
        if self._body_error is not None:
            raise self._body_error
        if not self._body_done:
            request = self._request
            if (request.expect_continue and not self._sent_continue) or (
                request.content_length is not None and request.content_length > DRAIN_LIMIT
            ):
                self._response.keep_alive = False

    def _finish_body(self) -> bool:
        """After the response: consume what the app left of the body, if it is small."""
        if self._body_done:
            return True
        request = self._request
        if request.expect_continue and not self._sent_continue:
            return False  # the client may or may not send the body now: close
        if self._body_error is not None:
            return False
        budget = DRAIN_LIMIT
        if request.content_length is not None and request.content_length > budget:
            return False
        # Not worth more than --timeout in all: a client dribbling the rest of a body
        # the app did not want is not kept for it.
        deadline = time.monotonic() + (self.timeout or 3600.0)
        try:
            while True:  # until the end of the body, which may come after budget bytes
                data = self._read_body(budget, deadline)
                if not data:
                    return True
                budget -= len(data)
                if budget < 0:
                    return False
        except (HTTPError, ClientDisconnected, OSError):  # OSError: TimeoutError too
            return False

    # sending --------------------------------------------------------------------------
    def set_nonblocking(self) -> None:
        """For a selector loop: recv() only what select() said is there, and try each
        send() once without waiting. A socket with a timeout makes CPython poll() before
        every recv() and send(): two extra syscalls per request."""
        self._set_timeout(0.0)

    def _send(self, data: bytes) -> None:
        if self._sock_timeout == 0.0:  # non-blocking: most responses go out in one send()
            if self.backlog:  # the client is behind already (evloop): queue this too;
                self.backlog += data  # _behind() pauses the app's iterable past the limit
                return
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            if self.write_behind:  # evloop: the loop sends it when the client reads
                self.backlog = bytearray(data[sent:])
                return
            data = memoryview(data)[sent:]  # wait for the client
        if self._sock_timeout != self.timeout:
            self._set_timeout(self.timeout)
        self.sock.sendall(data)

    def flush(self) -> None:
        """Send the backlog, waiting for the client (each send() at most --timeout)."""
        self._set_timeout(self.timeout)
        backlog, self.backlog = self.backlog, b""
        self.sock.sendall(backlog)  # (a bytearray: no copy)

    def send_backlog(self) -> bool:
        """For a selector loop, once the socket is writable: send what it takes of the
        backlog without waiting. True when all of it has gone."""
        try:
            sent = self.sock.send(self.backlog)
        except BlockingIOError:
            return False
        del self.backlog[:sent]
        return not self.backlog

    def _sendfile(self, file, offset: int, count: int) -> int:
        """Bytes of the file sent with os.sendfile(). evloop: what the socket takes now,
        without waiting (run_app reads the rest as pieces); else all of it, each send
        bounded by --timeout."""
        if self.write_behind:
            if self.backlog:  # the head has not all gone yet
                return 0
            self._set_timeout(0.0)
            sent = 0
            try:
                while sent < count and (n := os.sendfile(self.sock.fileno(), file.fileno(),
                                                         offset + sent, count - sent)):
                    sent += n
            except BlockingIOError:
                pass
            return sent
        self._set_timeout(self.timeout)
        return self.sock.sendfile(file, offset, count)
