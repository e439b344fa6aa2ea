"""One request and its response: the request cycle, the request body, the output.

Call flow (Connection makes a cycle per request; see connection.py):

    cycle = RequestCycle(ctx, output, parser, request, environ, body, spool, peer)
    keep = cycle.run()          # run_app(): the app's response, framed, to `output`
      response head goes out -> cycle.keep_alive_at_head()   # the one decision
    keep = cycle.run()          # again, if `cycle.paused`: the client was behind

`RequestCycle` holds what one request needs from start to end: the Request, its
environ, the wsgi.Response, the body, the start time and, while the client is behind
on a long response, the paused iterator. It owns the one keep-alive decision; the
Response only says what its framing allows (an HTTP/1.0 response of unknown length
ends with the close).

`RequestBody` is the body as the app reads it, streamed from the connection: read,
check as the head goes out, finish (drain a small unread rest) after. `Spool` is a
body read whole before the app runs.

An output strategy is how bytes reach the client, picked by the model:
`BlockingOutput` waits in sendall() (each send at most --timeout);
`BackloggedOutput` (the selector loop serving inline) sends what the socket takes
now and keeps the rest in a backlog, for the loop to send when the socket is
writable; past its limit, the app's iterable pauses.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable

from .compat import TIMEOUT
from .context import ServerContext
from .http import NEED_DATA, ClientDisconnected, Data, HTTPError, Request, RequestParser, \
    error_response
from .wsgi import AppError, Response, resume, run_app

DRAIN_LIMIT = 1 << 16  # unread body bytes we read and discard to keep a connection
SPOOL_MEMORY = 1 << 20  # a Spool's bytes in memory; past that, in a temporary file
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # RFC 9110 10.1.1


# --- output strategies ----------------------------------------------------------------


# BackloggedOutput: the backlog past which a slow reader's response is paused.
WRITE_BEHIND = 1 << 18


class BlockingOutput:
    """Bytes to the client, waiting for it: each send() blocks at most --timeout. A
    socket a selector loop set non-blocking gets one send() tried first: most
    responses go out whole in it. Owns the socket's timeout mode (reads set it too)."""

    behind = None  # run_app never pauses: the client is waited for

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout
        # (an instance attribute, not a class default: the loop reads it on every
        # event, and CPython 3.11 reads a class default the slow, generic way)
        self.backlog: bytes | bytearray = b""
        self.sock_timeout: float | None = -1.0  # what the socket is set to now

    def set_timeout(self, timeout: float | None) -> None:
        if timeout != self.sock_timeout:  # settimeout() is a syscall; skip repeats
            self.sock.settimeout(timeout)
            self.sock_timeout = timeout

    def send(self, data: bytes) -> None:
        if self.sock_timeout == 0.0:  # non-blocking: most responses go out in one send()
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]  # wait for the client
        if self.sock_timeout != self.timeout:
            self.set_timeout(self.timeout)
        self.sock.sendall(data)

    def sendfile(self, file, offset: int, count: int) -> int:
        """All of the file, with os.sendfile(), each send bounded by --timeout."""
        self.set_timeout(self.timeout)
        return self.sock.sendfile(file, offset, count)

    def flush(self) -> None:
        """Send what is held back (nothing here), before waiting on the client."""


class BackloggedOutput(BlockingOutput):
    """The selector loop's: what a slow reader has not taken yet waits in `backlog`,
    to be sent when the socket is writable (send_backlog), rather than in sendall()
    with every other client of the loop waiting too. Past `limit` bytes, `behind()`
    tells run_app to pause the app's iterable until the client catches up."""

    limit = WRITE_BEHIND

    def behind(self) -> bool:
        return len(self.backlog) > self.limit

    def send(self, data: bytes) -> None:
        if self.sock_timeout != 0.0:  # a body read set a timeout: wait, as blocking does
            return super().send(data)
        if self.backlog:  # the client is behind already: queue this too
            self.backlog += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent != len(data):
            self.backlog = bytearray(data[sent:])

    def sendfile(self, file, offset: int, count: int) -> int:
        """What the socket takes now, without waiting (run_app reads the rest of the
        file as pieces)."""
        if self.backlog:  # the head has not all gone yet
            return 0
        self.set_timeout(0.0)
        sent = 0
        try:
            while sent < count and (n := os.sendfile(self.sock.fileno(), file.fileno(),
                                                     offset + sent, count - sent)):
                sent += n
        except BlockingIOError:
            pass
        return sent

    def flush(self) -> None:
        """Send the backlog, waiting for the client (each send() at most --timeout)."""
        if self.backlog:
            self.set_timeout(self.timeout)
            backlog, self.backlog = self.backlog, b""
            self.sock.sendall(backlog)  # (a bytearray: no copy)

    def send_backlog(self) -> bool:
        """Once the socket is writable: send what it takes of the backlog without
        waiting. True when all of it has gone."""
        try:
            sent = self.sock.send(self.backlog)
        except BlockingIOError:
            return False
        del self.backlog[:sent]
        return not self.backlog


# --- request bodies ---------------------------------------------------------------------


class Spool:
    """A request body read whole before the app runs, as waitress, meinheld and bjoern
    do: a slow upload then costs a parked connection, not the worker. The parser's
    pieces are kept as they are (no copy) up to SPOOL_MEMORY bytes; past that they go
    to a temporary file, --max-body bytes at most."""

    def __init__(self) -> None:
        self.parts: deque[bytes] = deque()
        self.size = 0
        self.file = None
        self.error: Exception | None = None  # what was wrong with the body, if anything

    def fill(self, parser: RequestParser, progress: Callable[[], None] | None) -> bool:
        """Take what the parser holds of the body. True once the body has ended, or
        turned out bad (then `error` says how)."""
        try:
            while (event := parser.next_event()) is not NEED_DATA:
                if type(event) is not Data:  # EndOfMessage
                    self.rewind()
                    return True
                self.write(event.data)
                if progress is not None:
                    progress()
        except (HTTPError, ClientDisconnected) as error:
            self.error = error
            return True
        return False

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


class RequestBody:
    """A body the app reads as it comes (wsgi.input pulls it through read()).

    `recv(timeout)` reads more from the client into the parser (TimeoutError past
    it); the output sends 100 Continue and flushes what the client waits for first.
    """

    def __init__(self, request: Request, parser: RequestParser, recv, output: BlockingOutput,
                 ctx: ServerContext) -> None:
        self.request = request
        self.parser = parser
        self.recv = recv
        self.output = output
        self.ctx = ctx
        self.timeout = ctx.settings.timeout or None
        self.done = False  # the body has ended (EndOfMessage taken)
        self.error: HTTPError | None = None  # what was wrong with it, found while reading
        self.continue_owed = request.expect_continue  # Expect: 100-continue, not answered
        self.head_sent = False  # the response's head has gone out (the cycle says so)

    def read(self, size: int, deadline: float | None = None) -> bytes:
        if self.done:
            return b""
        if self.continue_owed:
            self.continue_owed = False
            if not self.head_sent:
                self.output.send(CONTINUE)
        parser = self.parser
        try:
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    self.output.flush()  # what the client may be waiting for before it sends
                    if deadline is None:
                        self.recv(self.timeout)
                    elif (remaining := deadline - time.monotonic()) > 0:
                        self.recv(remaining)
                    else:
                        raise TimeoutError("body not drained in time")
                elif type(event) is Data:
                    if self.ctx.progress is not None:
                        self.ctx.progress()
                    if parser.body_ended:  # the app read to Content-Length: the body is
                        parser.next_event()  # whole without its asking for EOF, and the
                        self.done = True  # connection may stay open
                    return event.data
                else:  # EndOfMessage
                    self.done = True
                    return b""
        except HTTPError as error:
            self.error = error
            raise
        except TIMEOUT:  # the app waited --timeout for the next of the body
            if deadline is not None:
                raise  # draining after the response: just close
            self.error = HTTPError(408, "request body not received in time")
            raise self.error from None

    def check(self) -> bool:
        """As the response head goes out: a bad body overrides the app's answer
        (raised); False when what is left unread cannot be drained afterwards, so the
        response must say it will close."""
        if self.error is not None:
            raise self.error
        if self.done:
            return True
        length = self.request.content_length
        return not (self.continue_owed or length is not None and length > DRAIN_LIMIT)

    def finish(self) -> bool:
        """After the response: consume what the app left of the body, if it is small.
        False when the connection cannot carry another request."""
        if self.done:
            return True
        if self.continue_owed or self.error is not None:
            return False  # (the client may or may not send the body now: close)
        budget = DRAIN_LIMIT
        length = self.request.content_length
        if length is not None and length > budget:
            return False
        # Not worth more than --timeout in all: a client dribbling the rest of a body
        # the app did not want is not kept for it.
        deadline = time.monotonic() + (self.timeout or 3600.0)
        try:
            while True:  # until the end of the body, which may come after budget bytes
                data = self.read(budget, deadline)
                if not data:
                    return True
                budget -= len(data)
                if budget < 0:
                    return False
        except (HTTPError, ClientDisconnected, OSError):  # OSError: TimeoutError too
            return False


# --- the cycle --------------------------------------------------------------------------


def answer_error(ctx: ServerContext, output: BlockingOutput, status: int, message: str) -> bool:
    """Count and send a short error response. False if the client is gone."""
    ctx.stats.count(status)
    try:
        output.send(error_response(status, message, time.time()))
    except OSError:
        return False
    return True


class RequestCycle:
    """One request, from its head to the end of its response."""

    # Until a cycle sets its own, these class defaults stand (no __slots__: on CPython
    # 3.11 an instance with a plain __dict__ is quicker to make, and one is made for
    # every request; `paused`, read by every run(), is set in __init__ instead: 3.11
    # reads a class default the slow, generic way).
    started = 0.0  # time.perf_counter() at the start, when there is an access log
    linger = False  # close lingering: the client may still be sending

    def __init__(self, ctx: ServerContext, output: BlockingOutput, parser: RequestParser,
                 request: Request, environ: dict, body: RequestBody | None,
                 spool: Spool | None, peer: str) -> None:
        self.ctx = ctx
        self.output = output
        self.parser = parser  # the connection's: bytes of a next request may wait in it
        self.request = request
        self.environ = environ
        self.body = body  # None: no body, or one read whole (`spool`)
        self.spool = spool
        self.peer = peer  # the client's address, for log lines
        self.paused = None  # wsgi.Paused: the client is behind; go on when it catches up
        # The client's wish and --keep-alive, as the request starts; the rest of the
        # decision is taken as the head goes out (keep_alive_at_head).
        keep_alive = request.keep_alive and ctx.keep_alive and not ctx.stopping
        self.response = Response(request, output.send, keep_alive, self.keep_alive_at_head)
        if ctx.logs.access_enabled:
            self.started = time.perf_counter()

    @property
    def body_done(self) -> bool:
        return self.body is None or self.body.done

    def keep_alive_at_head(self) -> bool:
        """The one keep-alive decision, as the response head goes out (its framing
        may close as well: Response.frame). The client's wish and --keep-alive were
        taken at the start; now: no stop (or --max-requests) begun while the app ran,
        and a body that can be finished after the response (a bad one raises here: it
        overrides the app's answer). A response that did not say close keeps its
        promise even if a stop begins later: the client may be sending its next
        request already, and that one is answered with close."""
        body = self.body
        if body is not None:
            drains = body.check()  # (raises for a bad body)
            body.head_sent = True
            if not drains:
                return False
        return not self.ctx.stopping

    def run(self) -> bool:
        """run_app(), or go on with a paused response; then what follows a response.
        True when the connection may carry another request (or this one is paused)."""
        ctx, resp = self.ctx, self.response
        behind = self.output.behind
        paused, self.paused = self.paused, None  # (resume() closes it if it fails)
        try:
            if paused is None:
                paused = run_app(ctx.app, self.environ, resp, self.output.sendfile, behind)
            else:
                paused = resume(paused, resp, behind)
        except (ConnectionError, *TIMEOUT):
            keep = False  # the client left while we were answering
        except Exception as error:
            status = self.app_failed(error)
            self.linger = status != 0 and not self.body_done
            if status and ctx.logs.access_enabled:  # the 500 (or 4xx) is counted there too
                self.log_access(status)
            keep = False
        else:
            if paused is not None:  # the client is behind: go on when it catches up
                self.paused = paused
                return True
            keep = resp.keep_alive and (self.body is None or self.body.finish())
            # Closing with the rest of a body, or more requests, maybe on their way: linger.
            self.linger = not keep and not (self.body_done and self.parser.buffered == 0)
            ctx.stats.count(resp.status_code)
            if ctx.logs.access_enabled:
                self.log_access(resp.status_code)
        if self.spool is not None:
            self.spool.close()  # its temporary file, if it had one, goes now
        return keep

    def log_access(self, status: int) -> None:
        self.ctx.logs.access(self.environ, status, self.response.bytes_sent,
                             time.perf_counter() - self.started)

    def app_failed(self, error: Exception) -> int:
        """Log what went wrong and answer it if nothing was sent yet. Returns the status
        the client got (0: the client is gone)."""
        request, log = self.request, self.ctx.logs.error
        if isinstance(error, HTTPError):  # a bad body surfaced while the app read it
            status, message = error.status, error.message
            log.info("refused %s %s from %s: %s", request.method, request.target, self.peer,
                     error)
        elif isinstance(error, ClientDisconnected):
            return 0
        else:
            status, message = 500, "The server could not complete your request."
            what = "broke the WSGI contract" if isinstance(error, AppError) else "raised"
            log.error("app %s on %s %s", what, request.method, request.target,
                      exc_info=sys.exc_info())
        if self.response.headers_sent:
            self.ctx.stats.count(status)
            return self.response.status_code  # cut short: all the client can be told is
        return status if answer_error(self.ctx, self.output, status, message) else 0  # close

    def close(self) -> None:
        """The client left (or was closed) mid-response: the app's close() is owed all
        the same (PEP 3333)."""
        paused, self.paused = self.paused, None
        if self.spool is not None:
            self.spool.close()
        if paused is not None:
            try:
                paused.close()
            except Exception:  # noqa: BLE001 (the app's own error, logged)
                self.ctx.logs.error.exception("app's close() raised")
