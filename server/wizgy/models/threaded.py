"""-k threaded: a bounded pool of threads; idle connections wait in a selector.

Flow
    main thread   the selector loop (selectorloop.py): parks every connection, feeds
                  it what arrives, and once a whole request is in (head and body)
                  dispatch() hands the connection to the pool
    pool thread   conn.serve_ready(): the request, then the pipelined ones already
                  here; then gives the connection back to the main thread to park
                  (over `returned` and the wakeup pipe), or closes it.

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
import threading
import time

from ..parked import ParkedConnection
from .selectorloop import SelectorLoop


class ThreadedModel(SelectorLoop):
    name = "threaded"
    multithread = True

    def start(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.returned: queue.SimpleQueue = queue.SimpleQueue()
        self.held = 0  # connections handed to the pool and not yet back or closed
        self.held_lock = threading.Lock()
        self.pool = [threading.Thread(target=self.work, name=f"wizgy-{i}", daemon=True)
                     for i in range(self.ctx.settings.threads)]
        for thread in self.pool:
            thread.start()

    # main thread --------------------------------------------------------------------
    def dispatch(self, conn: ParkedConnection) -> None:
        """A whole request is in: a pool thread takes the connection from here."""
        with self.held_lock:
            self.held += 1
        self.jobs.put(self.unpark(conn))

    def wakeup(self) -> None:
        """Park what the pool gave back: for its next request, or to linger."""
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

    def finish_in_flight(self) -> None:
        """Let the pool finish the requests it holds."""
        for _ in self.pool:
            self.jobs.put(None)
        deadline = time.monotonic() + self.ctx.settings.graceful_timeout
        for thread in self.pool:
            thread.join(max(0.0, deadline - time.monotonic()))

    # pool threads -------------------------------------------------------------------
    def work(self) -> None:
        while (conn := self.jobs.get()) is not None:
            self.ctx.stats.active += 1
            try:
                keep = conn.serve_ready()
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
