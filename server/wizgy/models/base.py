"""What every concurrency model shares: the listeners, accept() with back-off, and
the stop signals. A model subclasses `Model` and writes `run()`; see CPython's
socketserver for the idea that models differ only in *who* serves a connection.

Signals: SIGTERM asks for a graceful stop (finish in-flight requests, at most
--graceful-timeout seconds), SIGINT and SIGQUIT for a fast one. Handlers only record
what was asked; `signal.set_wakeup_fd` makes the main loop's select() return, and the
loop acts. (PEP 475: since Python 3.5 a signal no longer interrupts accept() or select()
with EINTR; the call is retried after the handler runs. That is why the wakeup fd is
needed at all, and why the tutorial's EINTR crash no longer reproduces.)
"""

from __future__ import annotations

import collections
import errno
import os
import select
import signal
import socket
import time

from ..context import ServerContext
from ..starting import pass_held_signals

# accept() failing with these means "out of descriptors or memory": back off and retry.
RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Model:
    name = "?"
    multithread = False
    multiprocess = False
    # False in a pre-fork worker: the listeners are shared with the master and the
    # other workers, so a worker that stops must only close its own copies.
    owns_listeners = True

    def __init__(self, ctx: ServerContext, listeners: list[socket.socket]) -> None:
        self.ctx = ctx
        self.listeners = listeners
        self.log = ctx.logs.error
        self.stop: str | None = None  # None, "graceful" or "fast"
        self.recorded: collections.deque[int] = collections.deque()  # signals to act on
        self._last_resource_log = 0.0
        for listener in listeners:
            listener.setblocking(False)  # several processes may race for one connection
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)

    @classmethod
    def flags(cls, settings) -> tuple[bool, bool]:
        """(wsgi.multithread, wsgi.multiprocess) as they will be true for this model."""
        return cls.multithread, cls.multiprocess

    @classmethod
    def slots(cls, settings) -> int:
        """Scoreboard slots this model needs: one per process that may run at once."""
        return 1

    def run(self) -> int:
        """A single-process model: serve until a stop signal. Exit status 0."""
        self.install_signals()
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass  # SIGINT/SIGQUIT, or the graceful timeout ran out
        finally:
            self.close_listeners()
        return 0

    def serve_forever(self) -> None:
        raise NotImplementedError

    # signals -----------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_fast_stop)
        signal.signal(signal.SIGQUIT, self.on_fast_stop)
        signal.signal(signal.SIGALRM, self.on_fast_stop)
        if self.owns_listeners:  # a server of one process (not a prefork master's worker)
            signal.signal(signal.SIGUSR1, self.on_usr1)
            for signum in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(signum, self.on_unsupported)  # by default: end, suspend
        pass_held_signals()

    def on_usr1(self, signum, frame) -> None:
        self.recorded.append(signum)  # a handler never logs or does I/O: the loop acts

    on_unsupported = on_usr1  # HUP, USR2, TTIN, TTOU: recorded, then logged by the loop

    def act_on_signals(self) -> None:
        """What the handlers recorded, acted on in the loop (drain_wakeup): a handler
        that wrote to a log could interrupt a write to the same log (reentrancy)."""
        while self.recorded:
            signum = self.recorded.popleft()
            if signum == signal.SIGUSR1:
                self.ctx.logs.reopen()
                self.log.info("Handling signal: usr1: reopened the log files")
            else:
                self.log.warning("Handling signal: %s: ignored by -k %s (HUP reloads and "
                                 "TTIN/TTOU add and remove workers under the prefork "
                                 "master; USR2 upgrades are not supported)",
                                 signal.Signals(signum).name[3:].lower(), self.name)

    def on_term(self, signum, frame) -> None:
        if self.stop is None:
            self.stop = "graceful"
            self.ctx.stopping = True
            if self.owns_listeners:
                self.stop_listening()  # new clients are refused now, not queued
            # The one thing a handler may start: a timer for the hard stop.
            if self.ctx.settings.graceful_timeout:
                signal.setitimer(signal.ITIMER_REAL, self.ctx.settings.graceful_timeout)

    def on_fast_stop(self, signum, frame) -> None:
        # A single-process model may be deep inside the app; raising is the only way to
        # stop "at once". run() catches it and exits 0.
        self.stop = "fast"
        raise KeyboardInterrupt

    def drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        if self.recorded:
            self.act_on_signals()

    # accepting ----------------------------------------------------------------------
    def wait_for_connections(self, timeout: float | None = None) -> list[socket.socket]:
        """Block until a listener is readable or a signal arrives."""
        readable, _, _ = select.select([*self.listeners, self.wakeup_r], [], [], timeout)
        if self.wakeup_r in readable:
            self.drain_wakeup()
            readable.remove(self.wakeup_r)
        return readable

    def accept(self, listener: socket.socket):
        """(sock, peer), or None when there is nothing to take right now."""
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None  # another process took it, or the client gave up already
        except OSError as error:
            if error.errno == errno.EINVAL:
                return None  # the listener was shut down (stop_listening): we are stopping
            if error.errno not in RESOURCE_ERRORS:
                raise
            self.resource_exhausted(error)
            return None
        return sock, peer  # Connection sets blocking or timeout mode before first use

    def resource_exhausted(self, error: OSError) -> None:
        """Out of descriptors: log at most once a second and pause, never spin or die."""
        self.ctx.stats.emfile_events += 1
        now = time.monotonic()
        if now - self._last_resource_log >= 1.0:
            self._last_resource_log = now
            self.log.warning("accept() failed: %s (%s); backing off",
                             os.strerror(error.errno), errno.errorcode[error.errno])
        self.back_off()

    def back_off(self) -> None:
        """Give descriptors a moment to come free. A model that also serves open
        connections from its loop must not sleep in it (ThreadedModel)."""
        time.sleep(0.1)

    def close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()

    def stop_listening(self) -> None:
        """Stop listening in *every* process that shares the listeners: shutdown() on a
        listening socket resets the connections queued in its backlog and makes new
        connect()s fail at once, where close() only drops this process's descriptor
        and leaves the kernel queueing connections that nobody will accept. Safe in a
        signal handler: the descriptors stay open, a select() on them wakes, and
        accept() fails with EINVAL until close_listeners()."""
        for listener in self.listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
