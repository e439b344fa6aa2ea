"""start_response, write() and the framing of one response (PEP 3333, "The
start_response() Callable"). A Response writes its bytes to a `send` callable."""

from __future__ import annotations

import re
from time import time
from collections.abc import Callable

from ..http import SERVER_SOFTWARE, Request, date_line

# RFC 9110 7.6.1: hop-by-hop fields belong to the connection, which is the server's
# business; PEP 3333 forbids applications from setting them.
HOP_BY_HOP = frozenset(
    "connection keep-alive proxy-authenticate proxy-authorization te trailer "
    "transfer-encoding upgrade".split()
)
HEADER_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
STATUS_LINE = re.compile(r"[1-9][0-9]{2} [^\x00-\x08\x0a-\x1f\x7f]*")

# (name, value) pairs already checked -> lowercased name. Apps send the same few
# headers again and again; checking each once saves a regex per header per response.
_checked_headers: dict[tuple[str, str], str] = {}
# A whole start_response() already checked, (status, *headers) -> what checking it
# found: most responses repeat one a route sent before, so each is checked and
# encoded once, not once per response.
_checked_starts: dict[tuple, tuple] = {}
CACHE_MAX = 4096  # entries in each of these caches, so odd values cannot grow them
# The last start_response() checked: (status, a copy of its headers, what checking
# found). A server answering one route over and over (a bench, a health check, most
# of an app's traffic) compares the headers with it, which costs less than building
# and hashing the key of _checked_starts (pypy-jit.md, candidate 6).
_last_start: tuple = (None, None, None)


def _remember_start(status, headers: list, checked: tuple) -> None:
    global _last_start
    _last_start = (status, headers[:], checked)  # a copy: the app may change its list


class AppError(Exception):
    """The application broke the WSGI contract (bad status or headers)."""


class Response:
    """start_response, write(), and the framing of one response."""

    # Until a response sets its own, these class defaults stand: a Response is made
    # for every request, and its __init__ writes only four attributes.
    status: str | None = None
    headers_sent = False
    content_length: int | None = None  # as the app declared it
    chunked = False
    body_allowed = True
    bytes_sent = 0  # body bytes, for the access log and Content-Length checks
    status_code = 0
    _pending_head = b""
    _head_block = b""  # the status line and the app's fields (and Server), encoded
    _add_date = True  # the app sent no Date of its own

    def __init__(self, req: Request, send: Callable[[bytes], None], keep_alive: bool,
                 at_head: Callable[[], bool] | None = None) -> None:
        self.req = req
        self._send = send
        # May the connection carry another request? What the server decided so far;
        # `at_head()`, called as the head goes out, may still say no (a stop begun
        # while the app ran) or raise (the request turned out bad). The framing may
        # close too (frame): an HTTP/1.0 body of unknown length, one cut short.
        self.keep_alive = keep_alive
        self._at_head = at_head

    # PEP 3333 start_response ------------------------------------------------------
    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the traceback cycle (PEP 3333)
        elif self.status is not None:
            raise AppError("start_response called twice without exc_info")
        last = _last_start  # read once: another thread may replace it meanwhile
        if type(headers) is list and last[1] == headers and last[0] == status:
            checked = last[2]  # the same start as the last response's: no key to hash
        else:
            checked = None
            if type(headers) is list:
                try:
                    checked = _checked_starts.get((status, *headers))
                except TypeError:
                    pass  # an unhashable item: _check_start says what is wrong
            if checked is None:
                checked = self._check_start(status, headers)
            _remember_start(status, headers, checked)
        self.status_code, self.content_length, self._add_date, self._head_block = checked
        self.status = status
        return self.write

    @staticmethod
    def _check_start(status, headers) -> tuple[int, int | None, bool, bytes]:
        """Check what the app passed to start_response; return its status code, its
        Content-Length, whether a Date must be added, and the head's first lines."""
        if type(status) is not str or not STATUS_LINE.fullmatch(status):
            raise AppError(f"invalid status {status!r}")
        if status < "2":  # a client takes a 1xx as interim and this response's end as
            raise AppError(f"1xx status {status!r} is not a final response")  # the next's
        if type(headers) is not list:
            raise AppError(f"headers must be a list, not {type(headers).__name__}")
        content_length = None
        has_date = has_server = False
        for item in headers:
            lname = _checked_headers.get(item) if type(item) is tuple else None
            if lname is None:
                lname = _check_header(item)
            if lname == "content-length":
                if content_length is not None:  # which one would the client believe?
                    raise AppError("more than one Content-Length header")
                content_length = int(item[1])
            has_date = has_date or lname == "date"
            has_server = has_server or lname == "server"
        lines = [f"HTTP/1.1 {status}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if not has_server:
            lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
        checked = (int(status[:3]), content_length, not has_date,
                   "".join(lines).encode("latin-1"))
        if len(_checked_starts) < CACHE_MAX:
            _checked_starts[(status, *headers)] = checked
        return checked

    # the body ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise AppError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.status is None:
            raise AppError("write() before start_response()")
        head = b"" if self.headers_sent else self._head(None)
        if not self.body_allowed:
            if head:
                self._send(head)
            return
        if self.content_length is not None:
            room = self.content_length - self.bytes_sent
            if len(data) > room:
                data = data[:room]  # the app sent more than it declared; the rest is cut
                self.keep_alive = False
        self.bytes_sent += len(data)
        if self.chunked:
            if data:
                self._send(b"%s%x\r\n%s\r\n" % (head, len(data), data))
            elif head:
                self._send(head)
        else:
            self._send(head + data if head else data)

    def send_single(self, data: bytes) -> bool:
        """The common case of a one-item body: we know its length, so no chunking, and
        head and body go out in one send(). True when that was the whole response;
        False when it went out as write() does, and finish() is still owed."""
        declared = self.content_length
        if self.headers_sent or type(data) is not bytes or \
                declared is not None and len(data) > declared:
            self.write(data)  # write() cuts a body longer than declared
            return False
        head = self._head(len(data) if declared is None else None)
        if not self.body_allowed:
            self._send(head)
            return True
        self.bytes_sent = len(data)
        self._send(head + data)
        if declared is not None and len(data) < declared:
            self.keep_alive = False  # short body: the client would wait for the rest
        return True

    def write_head(self, length: int | None) -> None:
        self._pending_head = self._head(length)

    def finish(self) -> None:
        """The app's iterable is exhausted: send what framing still owes."""
        if not self.headers_sent:
            self._send(self._head(0 if self.content_length is None else None))
        elif self.chunked:
            self._send(b"0\r\n\r\n")
        if self.content_length is not None and self.body_allowed \
                and self.bytes_sent < self.content_length:
            self.keep_alive = False  # short body: the client would wait for the rest

    def frame(self, length: int | None) -> bytes:
        """Decide the framing fields of this response (the one place that does).

        `length` is a Content-Length the server worked out itself (a one-item body,
        a file), used only when the app did not declare one.
        """
        req, code = self.req, self.status_code
        fields = b""
        if req.method == "HEAD" or code < 200 or code in (204, 304):
            self.body_allowed = False  # RFC 9110 6.4.1: these never carry content
            # A HEAD answered with the body a GET would get: say its length (RFC 9110
            # 9.3.2). Not when it is empty: apps send none for HEAD, and GET's length is
            # unknown; never on 204 or 304 (8.6).
            if length and self.content_length is None and req.method == "HEAD" \
                    and code not in (204, 304):
                fields = b"Content-Length: %d\r\n" % length
        elif self.content_length is None:
            if length is not None:
                self.content_length = length
                fields = b"Content-Length: %d\r\n" % length
            elif req.version == "HTTP/1.1":
                self.chunked = True
                fields = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the body is the close
        if not self.keep_alive:
            fields += b"Connection: close\r\n"
        elif req.version == "HTTP/1.0":
            fields += b"Connection: keep-alive\r\n"
        return fields

    def _head(self, length: int | None) -> bytes:
        if self.status is None:
            raise AppError("the application returned without calling start_response()")
        at_head = self._at_head
        if at_head is not None:
            self._at_head = None  # once: the head goes out once (and holds on to no one)
            if not at_head():
                self.keep_alive = False
        framing = self.frame(length)
        self.headers_sent = True
        if self._add_date:
            return b"%s%s%s\r\n" % (self._head_block, date_line(time()), framing)
        return b"%s%s\r\n" % (self._head_block, framing)


def _check_header(item) -> str:
    """Check one (name, value) of start_response; return the name in lowercase."""
    if type(item) is not tuple or len(item) != 2:
        raise AppError(f"header {item!r} is not a (name, value) tuple")
    name, value = item
    if type(name) is not str or not HEADER_NAME.fullmatch(name):
        raise AppError(f"invalid header name {name!r}")
    if type(value) is not str or BAD_VALUE.search(value) or not value.isascii() and \
            not _latin1(value):
        raise AppError(f"invalid value for header {name}: {value!r}")
    lname = name.lower()
    if lname in HOP_BY_HOP:
        raise AppError(f"hop-by-hop header {name!r} is the server's to set")
    if lname == "content-length" and (not value.isdigit() or not value.isascii()):
        raise AppError(f"invalid Content-Length {value!r}")
    if len(_checked_headers) < CACHE_MAX:
        _checked_headers[item] = lname
    return lname


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
