"""A connection a selector loop parks: fed what arrives, served once a whole request
is here (models/selectorloop.py; threaded adds a pool, evloop serves inline).

The blocking half, Connection (connection.py), reads with recv() until a request is
whole; this half never waits. The loop's select() says the socket is readable, and:

    conn.readable(buffer) -> feed(data) -> WAIT | BEGUN | READY | CLOSE
    conn.serve_ready()                  # READY: the request, then the pipelined ones

A body is read whole while the connection is parked (up to 64 KiB in the parser's
buffer, more into a Spool), so the app never waits on a slow upload. The loop touches
neither the socket nor the parser: what it needs, a ParkedConnection says.
"""

from __future__ import annotations

import socket
import time

from .connection import BUFFERED_BODY, LINGER_TIME, Connection
from .cycle import Spool
from .http import NEED_DATA, ConnectionClosed, HTTPError

# What ParkedConnection.feed() tells a selector loop to do next.
WAIT, BEGUN, READY, CLOSE = "wait", "begun", "ready", "close"
# The most one read of a parked connection takes. A selector loop reads every parked
# connection into one buffer of this size (SelectorLoop.read_buffer), and the parser
# copies out what came, as it would copy recv()'s bytes: recv(65536) allocates a new
# 64 KiB buffer for every read, which on PyPy is most of a request's garbage, hence of
# its collections and their pauses (docs/pypy-jit.md, finding 4).
READ_SIZE = 1 << 16


class ParkedConnection(Connection):
    """A Connection a selector loop holds between reads: non-blocking, fed bytes."""

    # reading without blocking ----------------------------------------------------------
    def readable(self, buffer: memoryview) -> str:
        """The loop's select() says the socket is readable: read what is there into
        `buffer` (the loop's own, reused by its next read) and feed() it (see there).
        WAIT after a spurious wakeup; CLOSE if the socket failed."""
        try:
            received = self.sock.recv_into(buffer)  # readable, so this does not block
        except BlockingIOError:
            return WAIT  # a spurious wakeup: nothing to read after all
        except OSError:
            return CLOSE
        return self.feed(buffer[:received])

    def feed(self, data: bytes | memoryview) -> str:
        """Bytes a selector loop read (b"": the client ended its side; the parser
        copies them, so a view of a reused buffer will do). Returns what
        the loop does next: WAIT (parked as it is), BEGUN (parked, --timeout from now:
        a head has begun, or a body moved on), READY (a whole request is here: serve
        it, serve_ready()) or CLOSE (close_connection: the client left, or its head was
        refused and answered)."""
        # request_begun, written out: this runs on every read (a property call costs)
        started = self.pending is not None or self.parser.head_begun
        if not data and not started:
            return CLOSE  # the client ended an idle keep-alive connection
        parser = self.parser
        parser.receive(data)
        if self.pending is None:
            if not parser.head_complete():
                # The head has begun: --timeout for all of it. (Empty lines before it
                # are skipped, not a beginning: else each CRLF would extend the wait.)
                return BEGUN if not started and parser.head_begun else WAIT
            if not self.take_head():  # refused (and answered), or the peer is gone
                return CLOSE
        request = self.pending
        if request is None:
            return WAIT  # take_head() found no head after all: wait for one
        if (request.content_length or request.chunked) and not self.body_ready():
            if not data:  # the client left mid-body (a spooled body: served, as an error)
                self.left_mid_body(request, parser.buffered)
                return CLOSE
            return BEGUN  # --timeout between two reads, as nginx
        return READY

    def serve_ready(self) -> bool:
        """The request feed() said is READY, then the pipelined ones already here, in
        order; one not all here yet waits parked, rather than keep a thread in a
        blocking read. (With none taken yet, just the pipelined ones: evloop's
        connection whose backlog is sent.) False when the connection must close."""
        keep = self.handle_request() if self.pending is not None else True
        parser = self.parser
        while keep and not self.output.backlog and parser.has_buffered_data \
                and parser.head_complete():  # (a backlog: this client is not reading)
            if not self.take_head():
                return False
            if self.pending is None or not self.body_ready():
                break  # the rest arrives while the connection waits parked
            keep = self.handle_request()
        return keep

    def time_out(self) -> None:
        """Parked past its deadline (the loop closes it next): a request that had
        begun gets its 408. (A slow reader or a lingering close: nothing to say.)"""
        if self.output.backlog or self.lingering:
            return
        if self.pending is not None:
            self.refuse(HTTPError(408, "request body not received in time"))
        elif self.parser.has_buffered_data:
            self.refuse(HTTPError(408, "request head not received in time"))

    def take_head(self) -> bool:
        """The parser holds a whole head (head_complete() said so): parse it into
        `pending`, for handle_request() to serve. False when the connection must close
        now (the head was refused and answered, or the peer has gone)."""
        try:
            event = self.parser.next_event()
        except HTTPError as error:
            self.refuse(error)
            return False
        if type(event) is ConnectionClosed:
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
        if self.spool is None:
            self.spool = Spool()
        return self.spool.fill(self.parser, self.ctx.progress)

    def has_unread_bytes(self) -> bool:
        """For a selector loop about to close an idle connection: did a request arrive
        that the loop has not read yet (it was busy in the app past the deadline)?"""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except OSError:  # BlockingIOError: nothing there
            return False

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

    def discard(self, buffer: memoryview) -> bool:
        """Read what a lingering client sent into `buffer` (the loop's) and drop it.
        False once it is time to close."""
        try:
            received = self.sock.recv_into(buffer)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return received > 0 and time.monotonic() < self.lingering

    def set_nonblocking(self) -> None:
        """For a selector loop: recv() only what select() said is there, and try each
        send() once without waiting. A socket with a timeout makes CPython poll() before
        every recv() and send(): two extra syscalls per request."""
        self.output.set_timeout(0.0)

    def send_backlog(self) -> bool:
        """Once the socket is writable: send what it takes of the backlog. True when
        all of it has gone."""
        return self.output.send_backlog()

    # evloop: a response paused while the client catches up -----------------------------
    def resume(self) -> bool:
        """evloop: the client has taken the backlog; go on with the paused response."""
        cycle = self.cycle
        keep = cycle.run()
        self.linger = cycle.linger
        if cycle.paused is None:
            self.cycle = None
        return keep
