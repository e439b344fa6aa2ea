"""-k threaded: a bounded pool of threads; idle connections wait in a selector.

Flow
    main thread   select() over the listeners, a wakeup pipe and every parked
                  (idle) connection:
                    listener readable    -> accept, park the connection
                    connection readable  -> recv() what is there into its parser; once
                                            a whole head is in (or an error, or EOF),
                                            and its whole body (Connection.body_ready),
                                            hand the connection to the pool
                    parked too long      -> close it (keep-alive over), or 408 if a
                                            request had started
    pool thread   conn.handle_request(), again while pipelined requests are buffered,
                  then gives the connection back to the main thread to park.

Why this shape: a thread per idle keep-alive connection lets 1,000 idle clients (or
500 clients dribbling a header byte a second) starve everyone else. Parked
connections cost a selector slot, not a thread; a thread is only spent on a request
whose head has fully arrived. A connection belongs to exactly one side at a time.

Lesson: compare with -k iterative: `/sleep?s=5` on one client no longer blocks
another, up to --threads at once. What breaks it: more slow *requests* than threads
(the pool is bounded on purpose); what fixes that: more threads or more processes.
"""

from __future__ import annotations

import os
import queue
import selectors
import threading
import time

from ..connection import DRAIN_IDLE, LINGER_IDLE, Connection
from ..http import HTTPError
from .base import Model

WAKEUP = "wakeup"


class ThreadedModel(Model):
    name = "threaded"
    multithread = True

    def serve_forever(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.returned: queue.SimpleQueue = queue.SimpleQueue()
        self.parked: dict[Connection, float] = {}  # connection -> deadline
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
        self.start_pool()
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

    # main thread --------------------------------------------------------------------
    def new_selector(self):
        return selectors.DefaultSelector()

    def ready(self, timeout: float) -> list:
        """What select() found readable: the data each was registered with."""
        return [key.data for key, _ in self.selector.select(timeout)]

    def poll(self) -> None:
        for ready in self.ready(0.1 if self.paused_until else 1.0):
            if ready is WAKEUP:
                self.drain_wakeup()
                self.park_returned()
            elif type(ready) is Connection:
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
            self.admit(Connection(*accepted, self.ctx, self.local.get(listener)))

    def admit(self, conn: Connection) -> None:
        """A new connection: it waits in the selector for its first request."""
        self.park(conn)

    def park(self, conn: Connection) -> None:
        self.parked[conn] = time.monotonic() + self.wait_for(conn)
        conn.set_nonblocking()  # read_parked() recv()s only when select() says so
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def wait_for(self, conn: Connection) -> float:
        """How long a connection may now wait parked: --keep-alive between requests,
        --timeout for a first request or one that has begun (a head or a body). Once a
        graceful stop has begun, an idle one gets DRAIN_IDLE for its next request (one
        accepted a moment ago: --keep-alive, at least DRAIN_IDLE, for its first)."""
        settings = self.ctx.settings
        if conn.pending is None and not conn.parser.head_begun:  # not conn.request_begun
            if self.stop is not None:
                return DRAIN_IDLE if conn.requests else max(DRAIN_IDLE, settings.keep_alive)
            if conn.requests:
                return settings.keep_alive
        return settings.timeout or 3600.0

    def unpark(self, conn: Connection) -> Connection:
        del self.parked[conn]
        self.selector.unregister(conn.sock)
        return conn

    def park_returned(self) -> None:
        while True:
            try:
                conn = self.returned.get_nowait()
            except queue.Empty:
                return
            if conn.linger:
                self.close_connection(conn)
            else:
                self.park(conn)
            with self.held_lock:
                self.held -= 1

    def close_connection(self, conn: Connection) -> None:
        """Close an unparked connection; one whose client may still be sending lingers
        first, parked (Connection.start_linger): the loop discards what it sends until
        it closes, or LINGER_IDLE passes with nothing, or LINGER_TIME in all."""
        if conn.linger and conn.start_linger():
            self.parked[conn] = time.monotonic() + LINGER_IDLE
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        else:
            conn.close()

    def read_parked(self, conn: Connection) -> None:
        if conn.lingering:
            if conn.discard():
                self.parked[conn] = min(conn.lingering, time.monotonic() + LINGER_IDLE)
            else:
                self.unpark(conn).close()
            return
        parser = conn.parser
        started = conn.pending is not None or parser.head_begun  # conn.request_begun
        try:
            data = conn.sock.recv(65536)  # readable, so this does not block
        except BlockingIOError:
            return  # a spurious wakeup: nothing to read after all
        except OSError:
            self.unpark(conn).close()
            return
        if not data and not started:
            self.unpark(conn).close()  # the client ended an idle keep-alive connection
            return
        parser.receive(data)
        timeout = self.ctx.settings.timeout or 3600.0
        if conn.pending is None:
            if not parser.head_complete():
                # The head has begun: --timeout for all of it. (Empty lines before it
                # are skipped, not a beginning: else each CRLF would extend the wait.)
                if not started and parser.head_begun:
                    self.parked[conn] = time.monotonic() + timeout
                return
            if not conn.take_head():  # refused (and answered), or the peer is gone
                self.close_connection(self.unpark(conn))
                return
        request = conn.pending
        if request is None:
            return  # take_head() found no head after all: wait for one
        if (request.content_length or request.chunked) and not conn.body_ready():
            if not data:  # the client left mid-body (a spooled body: served, as an error)
                conn.left_mid_body(request, parser.buffered)
                self.unpark(conn).close()
                return
            self.parked[conn] = time.monotonic() + timeout  # between two reads, as nginx
            return
        self.dispatch(conn)

    def expire_parked(self, now: float) -> None:
        for conn, deadline in list(self.parked.items()):
            if deadline <= now:
                if not (conn.request_begun or conn.backlog or conn.lingering) \
                        and conn.has_unread_bytes():  # (in the kernel: the loop was busy)
                    self.parked[conn] = now + (self.ctx.settings.timeout or 3600.0)
                    continue  # not idle after all: read_parked() takes it next
                self.unpark(conn)
                if conn.backlog or conn.lingering:
                    pass  # took nothing of its responses for --timeout, or lingered: close
                elif conn.pending is not None:
                    conn.refuse(HTTPError(408, "request body not received in time"))
                elif conn.parser.has_buffered_data:
                    conn.refuse(HTTPError(408, "request head not received in time"))
                self.close_connection(conn)

    def drain(self) -> None:
        """Graceful stop: accept nothing more, but serve what parked connections send
        next (Connection: close, since ctx.stopping is set), instead of closing them
        under a client that may be sending right now (wait_for: DRAIN_IDLE for an idle
        one). The pool's connections come back to be parked the same way: a response
        that went out without Connection: close promised the client its next request.
        Then close what is left (expire_parked)."""
        if not self.paused_until:
            for listener in self.listeners:
                self.selector.unregister(listener)
        self.paused_until = 0.0  # (and they stay unwatched: they are closed now)
        self.close_listeners()
        now = time.monotonic()
        for conn, deadline in self.parked.items():
            if not conn.backlog:  # (a slow reader keeps its --timeout)
                self.parked[conn] = min(deadline, now + self.wait_for(conn))
        deadline = now + self.ctx.settings.graceful_timeout
        while (self.parked or self.held) and time.monotonic() < deadline:
            self.poll()  # (INT/QUIT raise out of here)

    def finish_in_flight(self) -> None:
        """Let the pool finish the requests it holds."""
        for _ in self.pool:
            self.jobs.put(None)
        deadline = time.monotonic() + self.ctx.settings.graceful_timeout
        for thread in self.pool:
            thread.join(max(0.0, deadline - time.monotonic()))

    # pool threads -------------------------------------------------------------------
    def start_pool(self) -> None:
        self.held = 0  # connections handed to the pool and not yet back or closed
        self.held_lock = threading.Lock()
        self.pool = [threading.Thread(target=self.work, name=f"wizgy-{i}", daemon=True)
                     for i in range(self.ctx.settings.threads)]
        for thread in self.pool:
            thread.start()

    def dispatch(self, conn: Connection) -> None:
        """A whole request head is in: a pool thread takes the connection from here."""
        with self.held_lock:
            self.held += 1
        self.jobs.put(self.unpark(conn))

    def serve(self, conn: Connection) -> bool:
        """The request that was dispatched, then the pipelined ones already here, in
        order; one not all here yet goes back to wait parked, rather than keep this
        thread in a blocking read. (With no request taken yet, just the pipelined ones:
        evloop's connection whose backlog is sent.) False when the connection must close."""
        keep = conn.handle_request() if conn.pending is not None else True
        parser = conn.parser
        while keep and not conn.backlog and parser.has_buffered_data \
                and parser.head_complete():  # (a backlog: this client is not reading)
            if not conn.take_head():
                return False
            if conn.pending is None or not conn.body_ready():
                break  # the rest arrives while the connection waits parked
            keep = conn.handle_request()
        return keep

    def work(self) -> None:
        while (conn := self.jobs.get()) is not None:
            self.ctx.stats.active += 1
            try:
                keep = self.serve(conn)
            except BaseException:  # even an app's SystemExit must not end this thread
                self.log.exception("unexpected error serving a connection")
                keep = False
            finally:
                self.ctx.stats.active -= 1
            if keep or conn.linger:  # the main thread parks it: for its next request (even
                self.returned.put(conn)  # in a graceful stop), or to linger
                try:
                    os.write(self.wakeup_w, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full, so the main thread will wake anyway
            else:
                conn.close()
                with self.held_lock:
                    self.held -= 1
