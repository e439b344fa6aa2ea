"""The WSGI layer (PEP 3333): environ, wsgi.input, start_response and response framing.

It knows nothing of sockets. The connection driver hands it three callables:

    read_body(n) -> bytes     the next piece of the request body, b"" at its end
    send(data)                write bytes to the client
    sendfile(file, offset, count) -> int   optional zero-copy path for wsgi.file_wrapper

so everything here can be exercised with a BytesIO. One function, `Response.frame`,
decides how a response is delimited: the app's Content-Length, no body for
HEAD/1xx/204/304, chunked for HTTP/1.1, close-delimited for HTTP/1.0.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote_to_bytes

from .http import REASONS, HTTPError, Request

SERVER_SOFTWARE = "wizgy"

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

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list = [0, "", b""]  # second, IMF-fixdate, b"Date: ...\r\n"


def http_date() -> str:
    """RFC 9110 5.6.7 IMF-fixdate, recomputed at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        t = time.gmtime(now)
        date = f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year} " \
               f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        _date_cache[:] = [now, date, f"Date: {date}\r\n".encode("ascii")]
    return _date_cache[1]


def date_line() -> bytes:
    """The response's Date field line, as bytes."""
    if int(time.time()) != _date_cache[0]:
        http_date()
    return _date_cache[2]


# --- wsgi.input -----------------------------------------------------------------------


class InputStream:
    """wsgi.input: the request body as a file, streamed from the connection.

    Reads block only until the body has what was asked for or has ended; they never
    wait past the end of the body (PEP 3333, "Input and Error Streams").
    """

    def __init__(self, read_body: Callable[[int], bytes]) -> None:
        self._read_body = read_body
        self._buf = b""
        self._eof = False

    def _next(self) -> bytes:
        """The next piece of the body, b"" once it has ended."""
        if self._eof:
            return b""
        data = self._read_body(65536)
        if not data:
            self._eof = True
        return data

    def _fill(self) -> bool:
        data = self._next()
        self._buf += data
        return bool(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = -1
        parts = [self._buf] if self._buf else []  # joined once: += would copy each time
        have = len(self._buf)
        while (size < 0 or have < size) and (data := self._next()):
            parts.append(data)
            have += len(data)
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        if size < 0 or size >= len(buf):
            self._buf = b""
            return buf
        data, self._buf = buf[:size], buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if limit is not None and len(self._buf) >= limit:
                end = limit
                break
            start = len(self._buf)
            if not self._fill():
                end = len(self._buf)
                break
        if limit is not None:
            end = min(end, limit)
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class FileWrapper:
    """wsgi.file_wrapper: lets the server send a real file with os.sendfile."""

    def __init__(self, filelike, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def regular_file(self) -> tuple[int, int] | None:
        """(offset, bytes left) when this wraps a regular file we may sendfile()."""
        try:
            fd = self.filelike.fileno()
            st = os.fstat(fd)
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return offset, max(0, st.st_size - offset)


# --- environ --------------------------------------------------------------------------


class ServerInfo:
    """What the environ needs to know about the server and this connection."""

    __slots__ = (
        "server_name", "server_port", "remote_addr", "remote_port", "url_scheme",
        "root_path", "multithread", "multiprocess", "errors", "trust_proxy", "base",
    )

    def __init__(self, *, server_name, server_port, remote_addr, remote_port, url_scheme,
                 root_path, multithread, multiprocess, errors, trust_proxy) -> None:
        self.server_name = server_name
        self.server_port = server_port
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.url_scheme = url_scheme
        self.root_path = root_path
        self.multithread = multithread
        self.multiprocess = multiprocess
        self.errors = errors
        self.trust_proxy = trust_proxy
        # What every environ of this connection starts from (build_environ copies it)
        self.base = {
            "SCRIPT_NAME": root_path,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "REMOTE_ADDR": remote_addr,
            "REMOTE_PORT": remote_port,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.errors": errors,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }


_environ_keys: dict[str, str] = {}  # header name as sent -> its HTTP_* environ key


def build_environ(req: Request, wsgi_input, info: ServerInfo) -> dict:
    # PATH_INFO is the percent-decoded path, bytes carried in a latin-1 str (PEP 3333
    # "Unicode Issues"); SCRIPT_NAME is the mount point set by --root-path.
    path = unquote_to_bytes(req.path).decode("latin-1") if "%" in req.path else req.path
    script_name = info.root_path
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    environ = info.base.copy()  # SCRIPT_NAME, SERVER_*, REMOTE_*, wsgi.*
    environ["REQUEST_METHOD"] = req.method
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.target
    environ["SERVER_PROTOCOL"] = req.version
    environ["wsgi.input"] = wsgi_input
    for name, value in req.headers:
        key = _environ_keys.get(name)
        if key is None:
            if "_" in name:
                continue  # X-Forwarded_For would otherwise collide with X-Forwarded-For
            key = "HTTP_" + name.upper().replace("-", "_")
            if len(_environ_keys) < 4096:
                _environ_keys[name] = key
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "HTTP_CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    if req.host is not None:
        environ["HTTP_HOST"] = req.host  # RFC 9112 3.2.2: absolute-form wins over Host
        host, _, port = req.host.rpartition(":") if req.host[-1:] != "]" else (req.host, "", "")
        if host and port.isdigit():
            environ["SERVER_NAME"], environ["SERVER_PORT"] = host, port
        elif req.host:
            environ["SERVER_NAME"] = req.host
    if info.trust_proxy and ("HTTP_X_FORWARDED_FOR" in environ
                             or "HTTP_X_FORWARDED_PROTO" in environ):
        _apply_forwarded(environ)
    return environ


def _apply_forwarded(environ: dict) -> None:
    """Take client address and scheme from a trusted proxy's X-Forwarded-* fields."""
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        # The rightmost entry is the one our proxy appended; entries left of it came
        # from the client and can be forged.
        environ["REMOTE_ADDR"] = forwarded_for.rsplit(",", 1)[-1].strip(" \t")
    proto = environ.get("HTTP_X_FORWARDED_PROTO", "").strip(" \t").lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto


# --- the response -----------------------------------------------------------------------


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

    def __init__(self, req: Request, send: Callable[[bytes], None], *,
                 keep_alive: bool, check: Callable[[], None] | None = None,
                 ctx=None) -> None:
        self.req = req
        self._send = send
        self._ctx = ctx  # the server's context: its `stopping` means this one closes
        self._check = check  # raises if the request turned out bad while the app ran
        self.keep_alive = keep_alive

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
        checked = None
        if type(headers) is list:
            try:
                checked = _checked_starts.get((status, *headers))
            except TypeError:
                pass  # an unhashable item: _check_start says what is wrong
        if checked is None:
            checked = self._check_start(status, headers)
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

    def send_single(self, data: bytes) -> None:
        """The common case of a one-item body: we know its length, so no chunking, and
        head and body go out in one send()."""
        declared = self.content_length
        if self.headers_sent or type(data) is not bytes or \
                declared is not None and len(data) > declared:
            return self.write(data)  # write() cuts a body longer than declared
        head = self._head(len(data) if declared is None else None)
        if self.body_allowed:
            self.bytes_sent = len(data)
            self._send(head + data)
        else:
            self._send(head)

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
        if self.keep_alive and self._ctx is not None and self._ctx.stopping:
            self.keep_alive = False  # a stop (or --max-requests) began while the app ran
        if not self.keep_alive:
            fields += b"Connection: close\r\n"
        elif req.version == "HTTP/1.0":
            fields += b"Connection: keep-alive\r\n"
        return fields

    def _head(self, length: int | None) -> bytes:
        if self.status is None:
            raise AppError("the application returned without calling start_response()")
        if self._check is not None:
            self._check()
        framing = self.frame(length)
        self.headers_sent = True
        if self._add_date:
            return b"%s%s%s\r\n" % (self._head_block, date_line(), framing)
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


def error_response(status: int, message: str, *, keep_alive: bool = False) -> bytes:
    """A short plain-text response for errors the server answers itself."""
    body = f"{status} {REASONS.get(status, '')}\n{message}\n".encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {http_date()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n"
    )
    return head.encode("latin-1") + body


def run_app(app, environ: dict, resp: Response, sendfile=None, behind=None) -> Paused | None:
    """Call the application and send its response; the iterable is always closed.

    Raises whatever the app raised (or HTTPError from a bad body) so that the caller
    can answer 500/4xx if nothing was sent yet, or close the connection otherwise.

    `behind` (evloop): called after each piece of a many-piece body; True means the
    client is behind, so stop pulling from the app for now: run_app returns a Paused
    (the iterable not closed) for resume() to go on with once the client has caught
    up. A slow reader then costs the worker nothing, and the server's memory at most
    what `behind` allows and one piece more.
    """
    result: Iterable[bytes] = app(environ, resp.start_response)
    paused = None
    try:
        if sendfile is not None and type(result) is FileWrapper:
            sent, rest = _send_file(result, resp, sendfile)
            if rest is not None:  # what sendfile() did not send, read and sent in pieces
                paused = _send_pieces(result, rest, resp, behind)
                return paused
            if sent:
                return None
        if type(result) in (list, tuple) and len(result) == 1:  # the hot path: _end() and
            resp.send_single(result[0])  # _close() written out, two calls fewer a request
        else:
            paused = _send_pieces(result, iter(result), resp, behind)
            return paused
        if resp.status is None:
            raise AppError("the application returned without calling start_response()")
        resp.finish()
        return None
    finally:
        if paused is None:
            close = getattr(result, "close", None)
            if close is not None:
                close()


class Paused:
    """A response the client is behind on: the app's iterable and where it was."""

    __slots__ = ("iterator", "result")

    def __init__(self, result, iterator) -> None:
        self.result, self.iterator = result, iterator

    def close(self) -> None:
        """The client is gone before the rest: the app's close() is still owed."""
        _close(self.result)


def resume(paused: Paused, resp: Response, behind) -> Paused | None:
    """Go on with a paused response, as run_app would have; None once it is all sent."""
    again = None
    try:
        again = _send_pieces(paused.result, paused.iterator, resp, behind)
        return again
    finally:
        if again is None:
            _close(paused.result)


def _send_pieces(result, iterator, resp: Response, behind) -> Paused | None:
    for data in iterator:
        if data:
            resp.write(data)
            if behind is not None and behind():
                return Paused(result, iterator)
    _end(resp)
    return None


def _end(resp: Response) -> None:
    if resp.status is None:
        raise AppError("the application returned without calling start_response()")
    resp.finish()


def _close(result) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _send_file(wrapper: FileWrapper, resp: Response, sendfile) -> tuple[bool, Iterator | None]:
    """Send a regular file with sendfile(): (False, None) when it is not one. sendfile()
    may send less than all (evloop's sends what the socket takes now, without waiting;
    a file may shrink): the rest is then read, as pieces for run_app to send."""
    found = wrapper.regular_file()
    if found is None or resp.status is None or resp.headers_sent:
        return False, None
    offset, count = found
    if resp.content_length is not None:
        count = min(count, resp.content_length)
    resp.write_head(count if resp.content_length is None else None)
    resp._send(resp._pending_head)
    if resp.body_allowed and not resp.chunked:
        sent = sendfile(wrapper.filelike, offset, count)
        resp.bytes_sent = sent
        if sent < count:
            wrapper.filelike.seek(offset + sent)
            return True, _read_pieces(wrapper.filelike, count - sent, wrapper.blksize)
        resp.finish()
        return True, None
    if resp.chunked:  # unreachable: a known count always gives Content-Length
        raise AppError("sendfile with chunked framing")
    resp.finish()
    return True, None


def _read_pieces(file, left: int, size: int) -> Iterator[bytes]:
    while left > 0 and (data := file.read(min(size, left))):
        left -= len(data)
        yield data


__all__ = [
    "AppError", "FileWrapper", "HTTPError", "InputStream", "Paused", "Response", "ServerInfo",
    "build_environ", "error_response", "http_date", "resume", "run_app",
]
