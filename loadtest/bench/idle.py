"""Hold N idle keep-alive connections open to a server: the idle-1000 scenario's helper.

`python3 idle.py HOST PORT N SECONDS`. Each connection sends one GET / and reads the
answer, then stays silent, as a browser leaves a keep-alive connection between
clicks. It prints `ready <answered>` once all have had an answer (or after 15 s).
So that a server's keep-alive timeout (wizgy's is 5 s) does not empty the scenario
halfway through a run, each connection asks again every REFRESH seconds, staggered:
N / REFRESH requests a second in all (about 330 for 1,000), a few percent of the
active load. A connection the server closes stays closed: the server chose not to
hold it, and the count of connections held (sampled each 0.2 s) says so. At the end
it prints one JSON line: the fewest, most and last count held, and the refreshes sent.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
REFRESH = 3.0
READY_TIMEOUT = 15.0


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


class Holder:
    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.answered: set[socket.socket] = set()
        self.due: dict[socket.socket, float] = {}
        self.refreshes = 0
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(address)
            self.selector.register(sock, selectors.EVENT_WRITE)

    def step(self, timeout: float) -> None:
        for key, events in self.selector.select(timeout):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                self.send(sock)
                self.selector.modify(sock, selectors.EVENT_READ)
            else:
                self.receive(sock)

    def send(self, sock: socket.socket) -> None:
        try:
            sock.send(REQUEST)
        except OSError:
            self.drop(sock)

    def receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
        elif sock not in self.answered:
            self.answered.add(sock)  # any answer will do; the rest of it is drained

    def drop(self, sock: socket.socket) -> None:
        if sock in self.selector.get_map():
            self.selector.unregister(sock)
        self.answered.discard(sock)
        self.due.pop(sock, None)
        sock.close()

    def stagger(self) -> None:
        """Spread the refreshes of the answered connections over one REFRESH period."""
        now = time.monotonic()
        socks = list(self.answered)
        for i, sock in enumerate(socks):
            self.due[sock] = now + REFRESH * (i + 1) / len(socks)

    def refresh(self) -> None:
        now = time.monotonic()
        for sock, due in list(self.due.items()):
            if due <= now:
                self.due[sock] = now + REFRESH
                self.refreshes += 1
                self.send(sock)

    def held(self) -> int:
        return len(self.selector.get_map())


def main() -> None:
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    raise_nofile(count + 64)
    holder = Holder((host, port), count)
    deadline = time.monotonic() + READY_TIMEOUT
    while len(holder.answered) < count and time.monotonic() < deadline:
        holder.step(0.05)
    ready = len(holder.answered)
    print(f"ready {ready}", flush=True)
    holder.stagger()
    samples = []
    end = time.monotonic() + seconds
    next_sample = 0.0
    while time.monotonic() < end:
        holder.step(0.05)
        holder.refresh()
        if time.monotonic() >= next_sample:
            samples.append(holder.held())
            next_sample = time.monotonic() + 0.2
    print(
        "IDLE_JSON "
        + json.dumps(
            {
                "wanted": count,
                "answered_at_ready": ready,
                "held_min": min(samples),
                "held_max": max(samples),
                "held_end": samples[-1],
                "refreshes": holder.refreshes,
                "refresh_seconds": REFRESH,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
