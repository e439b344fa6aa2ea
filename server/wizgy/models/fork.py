"""-k fork: a child process per connection. Part 3 of the tutorial, done right.

Flow
    parent   select() over the listeners and the wakeup pipe (SIGCHLD and the stop
             signals write to it), then:
               listener readable -> accept(), fork_child(): the child gets the
                                    connection, the parent closes its copy of it
               after every wake  -> reap_children(): waitpid(-1, WNOHANG) until no
                                    exited child is left, freeing their slots
               --max-children    -> at the bound the parent stops selecting on the
                                    listeners (the kernel queues new connections in
                                    the backlog) until a child is reaped
    child    closes the listeners, serves its one connection (keep-alive included)
             with Connection.serve(), and leaves with os._exit() in a `finally`, so it
             never runs the parent's code after fork() by accident.

Why each rule (the lessons, `--lesson NAME`, each one method of this class undone):
  close_parent_copy()  a socket is closed (FIN sent) only when *every* descriptor
                       for it is closed: if the parent keeps its copy, the client
                       never sees EOF and the parent runs out of descriptors
                       (lessons/keep_duplicate_fds.py).
  reap_children()      a child that has exited stays a zombie until its parent waits
                       for it (lessons/no_reap.py); and one SIGCHLD may stand for many
                       exited children, since standard signals do not queue: waiting
                       once per signal leaves zombies (lessons/reap_once.py).
The handler only records; the main loop waits. PEP 475 makes accept()/select() retry
after a signal, so the tutorial's EINTR crash no longer happens; the wakeup fd
(signal.set_wakeup_fd) is what lets select() notice a signal at all.

fork() failing (EAGAIN under `ulimit -u` or a pids limit) is answered by the parent
with a 503 on that connection; accept() failing with EMFILE backs off (base.accept).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time

from ..connection import Connection
from ..context import Stats
from ..http import error_response
from ..proctitle import describe, set_title
from .base import Model

# Blocked around fork(), so no handler can run in the child before it has its own.
FORK_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM,
                signal.SIGCHLD, signal.SIGHUP}
ACCEPTS_PER_WAKE = 64  # then reap, so a burst cannot starve the reaper


class ForkModel(Model):
    name = "fork"
    multiprocess = True
    lesson: str | None = None  # a lesson subclass says here what it breaks

    @classmethod
    def slots(cls, settings) -> int:
        return settings.max_children

    def run(self) -> int:
        self.children: dict[int, int | None] = {}  # pid -> scoreboard slot
        self.sigchld_count = 0
        if self.lesson:
            self.log.warning("LESSON %s", self.lesson)
        self.install_signals()
        signal.signal(signal.SIGCHLD, self.on_child_exit)
        try:
            self.serve_forever()
            self.close_listeners()
            self.signal_children(signal.SIGTERM)  # finish the response, then close
            self.wait_for_children()
        except KeyboardInterrupt:
            pass  # SIGINT/SIGQUIT, or --graceful-timeout ran out (SIGALRM)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the graceful stop's deadline
            self.close_listeners()
            self.signal_children(signal.SIGKILL)
            self.reap_children()
        return 0

    def on_child_exit(self, signum, frame) -> None:
        self.sigchld_count += 1  # record only: the main loop reaps (reap_children)

    # parent ---------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while self.stop is None:
            for listener in self.wait():
                for _ in range(ACCEPTS_PER_WAKE):
                    accepted = self.accept(listener)
                    if accepted is None:
                        break
                    self.fork_child(*accepted)
                    if self.at_capacity():
                        break
            self.reap_children()

    def at_capacity(self) -> bool:
        return len(self.children) >= self.ctx.settings.max_children

    def wait(self) -> list[socket.socket]:
        """Readable listeners; none while at --max-children (then only signals wake us)."""
        if not self.at_capacity():
            return self.wait_for_connections(timeout=1.0)
        select.select([self.wakeup_r], [], [], 1.0)
        self.drain_wakeup()
        return []

    def fork_child(self, sock: socket.socket, peer) -> None:
        self.ctx.stats.connections_total += 1
        slot = self.ctx.board.claim() if self.ctx.board else None
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            pid = os.fork()
            if pid == 0:
                self.run_child(sock, peer, slot)  # never returns
            self.children[pid] = slot
        except OSError as error:
            self.release(slot)
            self.refuse_fork(sock, error)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED)
        self.close_parent_copy(sock)

    def close_parent_copy(self, sock: socket.socket) -> None:
        """The child has the connection now. Until this copy is closed too, the kernel
        keeps the connection open: the client would never see the end of it."""
        sock.close()

    def refuse_fork(self, sock: socket.socket, error: OSError) -> None:
        """fork() failed (EAGAIN: process limit): say so to this client and go on."""
        self.ctx.stats.fork_failures += 1
        self.ctx.stats.count(503)
        self.log.warning("fork() failed: %s; answered 503 (%d children)",
                         os.strerror(error.errno or 0), len(self.children))
        try:
            sock.setblocking(False)
            try:
                sock.recv(65536)  # what the request sent so far: unread, close() resets
            except OSError:
                pass
            sock.setblocking(True)
            sock.settimeout(1.0)
            sock.sendall(error_response(503, "The server cannot start a process now.", time.time()))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()

    def reap_children(self) -> None:
        """Wait for every child that has exited: one SIGCHLD may stand for many."""
        self.sigchld_count = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no children at all
            if pid == 0:
                return  # children left, none exited
            self.forget_child(pid, status)

    def forget_child(self, pid: int, status: int) -> None:
        self.release(self.children.pop(pid, None))
        if os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0:
            self.log.info("child %d exited with status %d", pid,
                          os.waitstatus_to_exitcode(status))

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.ctx.board.release(slot)

    def signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def wait_for_children(self) -> None:
        """Graceful stop: children finish their responses (SIGALRM ends the wait)."""
        running = self.running_children()
        if running:
            self.log.info("waiting for %d children to finish", len(running))
        while running:
            select.select([self.wakeup_r], [], [], 0.2)
            self.drain_wakeup()
            self.reap_children()
            running = self.running_children()

    def running_children(self) -> list[int]:
        """Children that have not exited (zombies a lesson left behind do not count)."""
        return [pid for pid in self.children if not exited(pid)]

    # child ----------------------------------------------------------------------------
    def run_child(self, sock: socket.socket, peer, slot: int | None):
        code = 0
        try:
            self.become_child(slot)
            set_title("child", describe(self.ctx.settings))
            try:
                Connection(sock, peer, self.ctx).serve()
            finally:
                self.ctx.stats.active = 0  # the slot shows no connection once we exit
        except KeyboardInterrupt:
            pass  # SIGINT, or the graceful stop ran out of time
        except BaseException:
            code = 1
            self.log.exception("child %d failed", os.getpid())
        finally:
            os._exit(code)

    def become_child(self, slot: int | None) -> None:
        """Drop what belongs to the parent: listeners, wakeup pipe, SIGCHLD handling.
        The stop signals keep base.Model's handlers: TERM ends keep-alive after the
        current response, INT/QUIT stop at once."""
        self.close_listeners()
        self.owns_listeners = False  # the parent's: a TERM here must not shut them down
        signal.set_wakeup_fd(-1)
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        if slot is not None:
            self.ctx.stats = self.ctx.board.stats(slot)
            self.ctx.stats.pid = os.getpid()
        else:
            self.ctx.stats = Stats()  # the board is full: counters of our own
        self.ctx.stats.active = 1
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED)


def exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it: waitid(WNOWAIT); where
    os has no waitid (PyPy 3.9), its state in /proc (Z: exited, not reaped yet)."""
    if hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except (FileNotFoundError, ProcessLookupError):
        return True
