"""Events for the live view: one JSON line per event, from any server process to the
status process, over a pipe.

    pipe = EventPipe()                     # main process, before forking anything
    ctx.event = pipe.send                  # main process (and, by inheritance, workers)
    ctx.event("worker started", pid=1234)  # master, parent, worker or child
    log = EventLog(pipe.read_fd)           # status process: keeps the last MAX_EVENTS
    log.pump(); log.recent()

Why a pipe: any number of processes may write, and a write of at most PIPE_BUF
bytes is atomic (POSIX write(2)), so lines from different workers never interleave,
with no lock and no shared index. Both ends are non-blocking: when the status process
is slow or gone, an event is dropped, never waited for. `send` never raises.

Not from a signal handler: handlers only record (STYLE.md); the loop that acts on the
signal sends the event ("signal received", signal="SIGHUP").
"""

from __future__ import annotations

import collections
import json
import os
import select
import time

MAX_EVENTS = 200
MAX_LINE = 1024  # well under PIPE_BUF (4096 on Linux): one write, never interleaved


def discard(what: str, **fields) -> None:
    """`ctx.event` when the status listener is off."""


def encode(what: str, fields: dict) -> bytes:
    record = {"time": round(time.time(), 3), "pid": os.getpid(), "event": what}
    # `pid` may be given: the process the event is about (a worker the master started).
    record.update({k: v for k, v in fields.items() if k not in ("time", "event")})
    line = json.dumps(record, default=str, separators=(",", ":"))
    if len(line) >= MAX_LINE:
        line = json.dumps({"time": record["time"], "pid": record["pid"],
                           "event": what[:200], "truncated": True})
    return line.encode() + b"\n"


class EventPipe:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def send(self, what: str, **fields) -> None:
        """Record an event; dropped (silently) when the pipe is full or closed."""
        if self.write_fd < 0:
            return
        try:
            os.write(self.write_fd, encode(what, fields))
        except OSError:  # EAGAIN: full; EPIPE: the status process is gone
            pass

    def close_reader(self) -> None:
        os.close(self.read_fd)
        self.read_fd = -1

    def close_writer(self) -> None:
        os.close(self.write_fd)
        self.write_fd = -1


class EventLog:
    """The status process's side: the last MAX_EVENTS events, oldest first."""

    def __init__(self, read_fd: int, size: int = MAX_EVENTS) -> None:
        self.read_fd = read_fd
        self.events: collections.deque = collections.deque(maxlen=size)
        self._partial = b""
        self.closed = False  # every writer is gone (the server has exited)

    def add(self, what: str, **fields) -> None:
        """An event the status process observed itself (from /proc or the counters)."""
        self.events.append(json.loads(encode(what, fields)))

    def pump(self) -> None:
        """Take every complete line waiting in the pipe."""
        while select.select([self.read_fd], [], [], 0)[0]:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return
            if not data:  # every writer closed: nothing more will come
                self.closed = True
                return
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    pass

    def recent(self, limit: int = 50) -> list[dict]:
        return list(self.events)[-limit:]
