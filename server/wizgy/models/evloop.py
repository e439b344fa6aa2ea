"""-k evloop: one thread, one selector loop; requests run inline. The fast model.

The selector loop of selectorloop.py, with no pool: it parks every connection, feeds
it what arrives, and as soon as a whole request is in, calls the application *right
there* (dispatch) and writes the response, then goes back to select(). What bjoern and meinheld do in C, in Python:
no thread hand-offs, no locks, no queue, no re-registering sockets per request.
Sockets here are non-blocking: recv() only when epoll says so, send() tried once.
A new connection's first request is usually in by the time accept() returns, so
admit() reads it at once instead of waiting for epoll to report it.

The price (and the lesson): while the app runs, nothing else in this process does.
A slow app (/sleep?s=5) stalls every client of this worker, so this model is meant
to run as several processes: `-k evloop` (the default) is the pre-fork master of
prefork.py with workers running this loop (`-w N`), best behind nginx, with apps that
do not block for long.

Slow clients: a connection stays parked until its whole head is in, and its whole
body too (read_parked, ParkedConnection.body_ready: up to 64 KiB in the parser's buffer,
more into a Spool, past 1 MiB a temporary file), so the app never waits on a slow
upload. A head must arrive within --timeout of its first byte, and a body may pause
for at most --timeout between two reads; else the client gets a 408. Only a body
after Expect: 100-continue is read by the app as it comes (that client waits for the
app to ask for it), each read bounded by --timeout.

Slow readers: what a client has not taken of its responses waits in the connection's
backlog, and the connection waits in epoll for the socket to be writable. Past 256 KiB
the app's iterable is paused (wsgi.Paused) and pulled from again once the backlog is
sent, so a 100 MB streamed download to a slow client costs this worker nothing and
the server at most 256 KiB and one piece more. Its next (pipelined) request is served
only once its response is all sent. The client must take some every --timeout, or it
is closed (and the app's close() called). A file (wsgi.file_wrapper over a regular
file) goes out with os.sendfile() as far as the socket takes it, then as pieces read
from the file, paused the same way.
"""

from __future__ import annotations

import select
import selectors
import time

from ..cycle import BackloggedOutput
from ..parked import ParkedConnection
from .selectorloop import SelectorLoop


class Epoll:
    """The part of a `selectors` selector this loop uses, on epoll directly: one dict
    lookup per ready descriptor instead of a SelectorKey and an event mask (0.25 us
    an event, about 1% of a hello-world request). Linux only; elsewhere the loop uses
    the selectors module as the threaded model does."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._data: dict[int, object] = {}  # fd -> what register() was given

    def register(self, fileobj, events, data) -> None:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        self._epoll.register(fd, select.EPOLLIN)  # every caller here waits to read
        self._data[fd] = data

    def modify(self, fileobj, events, data) -> None:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        self._epoll.modify(fd, select.EPOLLOUT if events & selectors.EVENT_WRITE else select.EPOLLIN)
        self._data[fd] = data

    def unregister(self, fileobj) -> None:
        fd = fileobj if type(fileobj) is int else fileobj.fileno()
        self._epoll.unregister(fd)
        del self._data[fd]

    def ready(self, timeout: float) -> list:
        data = self._data
        return [data[fd] for fd, _ in self._epoll.poll(timeout)]

    def close(self) -> None:
        self._epoll.close()


class EventLoopModel(SelectorLoop):
    name = "evloop"
    multithread = False
    output = BackloggedOutput  # a slow reader's bytes wait; past WRITE_BEHIND, its app too

    def new_selector(self):
        return Epoll() if hasattr(select, "epoll") else super().new_selector()

    def ready(self, timeout: float) -> list:
        if type(self.selector) is Epoll:
            return self.selector.ready(timeout)
        return super().ready(timeout)

    def start(self) -> None:
        self.closing: set[ParkedConnection] = set()  # to close once their backlog is sent

    def admit(self, conn: ParkedConnection) -> None:
        """Clients send their request right after connecting, so by the time accept()
        returns it is often here already: read it now rather than after one more trip
        through epoll. If nothing is there yet, read_parked() leaves it parked."""
        self.park(conn)
        self.read_parked(conn)

    def dispatch(self, conn: ParkedConnection) -> None:
        """Serve inline: this thread is the whole worker."""
        # conn.cycle, between two requests: a response paused for a slow reader
        keep = True if conn.cycle is None else conn.resume()
        if keep and conn.cycle is None:
            keep = conn.serve_ready()
        if conn.output.backlog:  # the client is slow to take its responses: wait
            if not keep:
                self.closing.add(conn)
            self.wait_to_write(conn)
        elif keep:  # (in a graceful stop too: the response promised the next request)
            conn.set_nonblocking()  # a slow body or client may have needed a timeout
            self.parked[conn] = time.monotonic() + self.wait_for(conn)
        else:
            self.close_connection(self.unpark(conn))

    def wait_to_write(self, conn: ParkedConnection) -> None:
        conn.set_nonblocking()
        self.selector.modify(conn, selectors.EVENT_WRITE, conn)
        self.parked[conn] = time.monotonic() + self.timeout

    def read_parked(self, conn: ParkedConnection) -> None:
        if conn.output.backlog:  # it waits to write, and now it can
            self.write_parked(conn)
        else:
            super().read_parked(conn)

    def write_parked(self, conn: ParkedConnection) -> None:
        try:
            done = conn.send_backlog()
        except OSError:  # the client is gone
            self.unpark(conn).close()
            return
        if not done:  # it took some: --timeout again for the next of it
            self.parked[conn] = time.monotonic() + self.timeout
        elif conn.cycle is None and conn in self.closing:
            self.close_connection(self.unpark(conn))
        else:  # the rest of a paused response, then the requests it pipelined meanwhile
            self.selector.modify(conn, selectors.EVENT_READ, conn)
            self.dispatch(conn)

    def unpark(self, conn: ParkedConnection) -> ParkedConnection:
        self.closing.discard(conn)
        return super().unpark(conn)
