"""The selector loop both non-blocking models share: idle connections wait parked in
a selector, with a deadline each; a connection is served only once a whole request
is in. What is written once here: accepting, parking, deadlines, expiry and the
graceful drain. The models differ only in `dispatch()`, who serves a READY
connection: threaded.py hands it to a pool thread, evloop.py serves it inline.

Flow
    serve_forever()   select() over the listeners, the wakeup pipe and every parked
                      connection, then once a second expire_parked():
                        listener readable    -> accept_all(): admit() each connection
                        connection readable  -> read_parked(): conn.readable(buffer) says
                                                WAIT, BEGUN (deadline moved), READY
                                                (dispatch) or CLOSE
                        wakeup pipe          -> signals (base.py), then wakeup()
                        past its deadline    -> 408 if a request had begun, close
    drain()           graceful stop: accept nothing more, serve what parked clients
                      send next (with Connection: close), then close what is left.

A model never touches a connection's socket or parser: ParkedConnection says what it needs.
"""

from __future__ import annotations

import selectors
import time

from ..connection import DRAIN_IDLE, LINGER_IDLE
from ..cycle import BlockingOutput
from ..parked import BEGUN, CLOSE, READY, READ_SIZE, ParkedConnection
from .base import Model

WAKEUP = "wakeup"


class SelectorLoop(Model):
    held = 0  # connections handed elsewhere (a pool) and not yet back or closed
    # How a connection's responses go out: a pool thread may wait on a slow reader
    # (evloop, serving inline, may not: BackloggedOutput).
    output = BlockingOutput

    def serve_forever(self) -> None:
        settings = self.ctx.settings
        self.timeout = settings.timeout or 3600.0  # a parked request's deadline
        self.parked: dict[ParkedConnection, float] = {}  # connection -> deadline
        # Every parked connection's reads land here, one after another: only this
        # thread reads them (a pool gets a connection once its request is all in).
        self.read_buffer = memoryview(bytearray(READ_SIZE))
        self.selector = self.new_selector()
        for listener in self.listeners:
            self.selector.register(listener, selectors.EVENT_READ, listener)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, WAKEUP)
        self.next_sweep = 0.0
        self.paused_until = 0.0  # out of descriptors: listeners unwatched until then
        # A listener bound to one address: its connections' local address is known
        # (bound to 0.0.0.0 or ::, each connection's depends on the interface it came in).
        self.local = {}
        for listener in self.listeners:
            address = listener.getsockname()
            if type(address) is tuple and address[0] not in ("0.0.0.0", "::"):
                self.local[listener] = address
        self.start()
        try:
            while self.stop is None:
                self.poll()
            self.drain()
            self.finish_in_flight()
        finally:
            for conn in list(self.parked):
                self.unpark(conn).linger = False  # exiting: no more waiting on anyone
                conn.close()
            self.selector.close()

    # what a model adds ------------------------------------------------------------------
    def start(self) -> None:
        """Before the loop: start what serves connections (a pool)."""

    def dispatch(self, conn: ParkedConnection) -> None:
        """A parked connection's request is all here (READY): serve it."""
        raise NotImplementedError

    def wakeup(self) -> None:
        """The wakeup pipe was written to (a signal, or another thread)."""

    def finish_in_flight(self) -> None:
        """After the drain: let what is being served finish."""

    # the loop ---------------------------------------------------------------------------
    def new_selector(self):
        return selectors.DefaultSelector()

    def ready(self, timeout: float) -> list:
        """What select() found readable: the data each was registered with."""
        return [key.data for key, _ in self.selector.select(timeout)]

    def poll(self) -> None:
        for ready in self.ready(0.1 if self.paused_until else 1.0):
            if ready is WAKEUP:
                self.drain_wakeup()
                self.wakeup()
            elif type(ready) is ParkedConnection:
                self.read_parked(ready)
            else:
                self.accept_all(ready)
        now = time.monotonic()
        if self.paused_until and now >= self.paused_until:
            self.watch_listeners()
        if now >= self.next_sweep:  # once a second, not per event: cheap with 5,000 idle
            self.next_sweep = now + 1.0
            self.expire_parked(now)
            self.ctx.stats.idle = len(self.parked)

    def back_off(self) -> None:
        """Out of descriptors: stop watching the listeners for 0.1 s, while the open
        connections go on being served (sleeping here would stall them all)."""
        if not self.paused_until:
            for listener in self.listeners:
                self.selector.unregister(listener)
        self.paused_until = time.monotonic() + 0.1

    def watch_listeners(self) -> None:
        self.paused_until = 0.0
        for listener in self.listeners:
            self.selector.register(listener, selectors.EVENT_READ, listener)

    def accept_all(self, listener) -> None:
        for _ in range(64):  # bounded, so parked connections get their turn too
            accepted = self.accept(listener)
            if accepted is None:
                return
            self.ctx.stats.connections_total += 1
            self.admit(ParkedConnection(*accepted, self.ctx, self.local.get(listener),
                                        self.output))

    def admit(self, conn: ParkedConnection) -> None:
        """A new connection: it waits in the selector for its first request."""
        self.park(conn)

    # parking ----------------------------------------------------------------------------
    def park(self, conn: ParkedConnection) -> None:
        self.parked[conn] = time.monotonic() + self.wait_for(conn)
        conn.set_nonblocking()  # read_parked() recv()s only when select() says so
        self.selector.register(conn, selectors.EVENT_READ, conn)

    def wait_for(self, conn: ParkedConnection) -> float:
        """How long a connection may now wait parked: --keep-alive between requests,
        --timeout for a first request or one that has begun (a head or a body). Once a
        graceful stop has begun, an idle one gets DRAIN_IDLE for its next request (one
        accepted a moment ago: --keep-alive, at least DRAIN_IDLE, for its first)."""
        if self.stop is None:  # (a new connection: no request_begun to ask)
            if conn.requests and not conn.request_begun:
                return self.ctx.settings.keep_alive
            return self.timeout
        if conn.request_begun:
            return self.timeout
        keep_alive = self.ctx.settings.keep_alive
        return DRAIN_IDLE if conn.requests else max(DRAIN_IDLE, keep_alive)

    def unpark(self, conn: ParkedConnection) -> ParkedConnection:
        del self.parked[conn]
        self.selector.unregister(conn)
        return conn

    def close_connection(self, conn: ParkedConnection) -> None:
        """Close an unparked connection; one whose client may still be sending lingers
        first, parked (ParkedConnection.start_linger): the loop discards what it sends until
        it closes, or LINGER_IDLE passes with nothing, or LINGER_TIME in all."""
        if conn.linger and conn.start_linger():
            self.parked[conn] = time.monotonic() + LINGER_IDLE
            self.selector.register(conn, selectors.EVENT_READ, conn)
        else:
            conn.close()

    def read_parked(self, conn: ParkedConnection) -> None:
        if conn.lingering:
            if conn.discard(self.read_buffer):
                self.parked[conn] = min(conn.lingering, time.monotonic() + LINGER_IDLE)
            else:
                self.unpark(conn).close()
            return
        what = conn.readable(self.read_buffer)
        if what is READY:
            self.dispatch(conn)
        elif what is BEGUN:
            self.parked[conn] = time.monotonic() + self.timeout
        elif what is CLOSE:
            self.close_connection(self.unpark(conn))

    def expire_parked(self, now: float) -> None:
        for conn, deadline in list(self.parked.items()):
            if deadline <= now:
                if not (conn.request_begun or conn.output.backlog or conn.lingering) \
                        and conn.has_unread_bytes():  # (in the kernel: the loop was busy)
                    self.parked[conn] = now + self.timeout
                    continue  # not idle after all: read_parked() takes it next
                self.unpark(conn).time_out()  # (a 408 if a request had begun)
                self.close_connection(conn)

    def drain(self) -> None:
        """Graceful stop: accept nothing more, but serve what parked connections send
        next (Connection: close, since ctx.stopping is set), instead of closing them
        under a client that may be sending right now (wait_for: DRAIN_IDLE for an idle
        one). Connections held elsewhere come back to be parked the same way: a response
        that went out without Connection: close promised the client its next request.
        Then close what is left (expire_parked)."""
        if not self.paused_until:
            for listener in self.listeners:
                self.selector.unregister(listener)
        self.paused_until = 0.0  # (and they stay unwatched: they are closed now)
        self.close_listeners()
        now = time.monotonic()
        for conn, deadline in self.parked.items():
            if not conn.output.backlog:  # (a slow reader keeps its --timeout)
                self.parked[conn] = min(deadline, now + self.wait_for(conn))
        deadline = now + self.ctx.settings.graceful_timeout
        while (self.parked or self.held) and time.monotonic() < deadline:
            self.poll()  # (INT/QUIT raise out of here)
