"""HTTP/1.1 request parsing, sans-IO: bytes in, events out (RFC 9112, server side).

Theory of operation
-------------------
A `RequestParser` owns one connection's receive buffer. The connection driver calls
`receive(data)` with whatever the socket gave it (b"" for end of stream) and then
`next_event()` until it returns `NEED_DATA`. A request comes out as:

    Request  ->  Data* ->  EndOfMessage

after which the parser is ready for the next (pipelined) request, which may already
sit in the buffer. Nothing here touches a socket, a clock or a thread.

The head is parsed in one pass: find the blank line, reject stray CR/LF/control bytes
in one regex search, then match the request line and each field line against the
ABNF written out in abnf.py. Everything that decides where one message ends and the next
begins (Content-Length, Transfer-Encoding, chunk framing) is strict: a request that
two parsers could read two ways is refused, never guessed at, because that ambiguity
is what request smuggling exploits (RFC 9112 section 11.2).

Errors are raised as `HTTPError(status, message)`; the caller answers with that
status, `Connection: close`, and closes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from .abnf import (
    ABSOLUTE_FORM, CHUNK_SIZE_LINE, FIELD_LINE, FIELDS, FORBIDDEN, HEAD, HOST, NOTED, OWS,
    OWS_TEXT, REQUEST_LINE, SINGLE_VALUE, TOKEN,
)
from .errors import ClientDisconnected, HTTPError
from .events import CONNECTION_CLOSED, END_OF_MESSAGE, NEED_DATA, SLOTS, Data, EndOfMessage, \
    Request

MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions; longer is abuse
# The most body bytes one Data event carries. A body may sit whole in the buffer (a
# selector loop waits for bodies up to 1 MiB): handing it out in pieces this size lets
# a reader asking for 64 KiB at a time take each piece without copying the rest.
MAX_DATA = 1 << 16


@dataclass(frozen=True, **SLOTS)
class Limits:
    request_line: int = 8190  # 0 = unlimited
    fields: int = 100
    field_size: int = 8190  # 0 = unlimited
    max_body: int = 1 << 30  # 0 = unlimited
    # The whole head: request line, field lines and the empty line that ends them, with
    # their CRLFs (empty lines skipped before a request do not count). 0 = no bound but
    # the one the three limits above imply (~800 KiB at their defaults).
    head: int = 1 << 16


# --- the parser -----------------------------------------------------------------------

_HEAD, _END, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS = range(7)


class RequestParser:
    """One connection's request stream. See the module docstring for the flow."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._eof = False
        self._state = _HEAD
        self._remaining = 0  # body bytes left in this Content-Length body or chunk
        self._body_seen = 0  # body bytes so far, for --max-body on chunked bodies
        # Where to resume searching an incomplete head or trailer section: the end of
        # what was searched already, less 3 bytes (a CRLFCRLF or a CR/LF pair split
        # across two receives). A client dribbling one byte per packet must not make
        # each packet rescan the whole buffer (quadratic: 150 s of CPU for a 100 KB
        # head sent byte by byte).
        self._resume_at = 0
        line_limit = limits.request_line or 1 << 20
        field_limit = limits.field_size or 1 << 20
        # The longest head (or trailer section) taken, blank line included: checked as
        # bytes arrive (_check_partial_head), so no more than this (and what one read
        # brings) is ever buffered waiting for the end of a head; and once it has come
        # (_parse_head).
        self._max_head = line_limit + 2 + limits.fields * (field_limit + 2) + 2
        if limits.head:
            self._max_head = min(limits.head, self._max_head)
        # A head no longer than this has no line over either limit, and is within the
        # head limit: the fast path need not measure it or its lines one by one.
        self._fast_head = min(line_limit, field_limit, self._max_head - 4)
        self._valid_host = None  # the last Host value that passed HOST: clients repeat it

    # feeding -------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def has_buffered_data(self) -> bool:
        """True when bytes of a next request are already here (pipelining)."""
        return bool(self._buf)

    @property
    def head_begun(self) -> bool:
        """Bytes of a next request are here: more than the CR that may only begin an
        empty line (which is skipped, not a start)."""
        buf = self._buf
        return bool(buf) and buf != b"\r"

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out (of a body, once its head is read)."""
        return len(self._buf)

    @property
    def in_body(self) -> bool:
        return self._state != _HEAD

    @property
    def body_ended(self) -> bool:
        """The body's last byte has been handed out: EndOfMessage comes next, with no
        more to read (a Content-Length body read to its length)."""
        return self._state == _END

    def next_event(self):
        state = self._state
        if state == _HEAD:
            return self._next_head()
        if state == _END:
            self._state = _HEAD
            return END_OF_MESSAGE
        if state == _LENGTH:
            return self._next_length_data()
        return self._next_chunked()

    # head ----------------------------------------------------------------------
    def _next_head(self):
        buf = self._buf
        if buf.startswith(b"\r\n"):
            self._skip_empty_lines(buf)
        end = buf.find(b"\r\n\r\n", self._resume_at)
        if end < 0:
            return self._incomplete_head()
        head = bytes(buf[:end])
        del buf[: end + 4]
        self._resume_at = 0
        request = self._parse_head(head)
        self._start_body(request)
        return request

    def head_complete(self) -> bool:
        """Will next_event() get through a head without more data? True when the
        blank line is here, when what is here is already refusable, or at EOF. Lets a
        selector loop read a head before giving the connection to a thread."""
        buf = self._buf
        if self._state != _HEAD or self._eof:
            return True
        # The same search _next_head() makes, after the same skip: "\r\n\r\n" alone
        # is two empty lines, not a head, and a loop that took it for one would then
        # wait in a blocking recv() for a request that may never come.
        if buf.startswith(b"\r\n"):
            self._skip_empty_lines(buf)
        if buf.find(b"\r\n\r\n", self._resume_at) >= 0:
            return True
        try:
            self._check_partial_head()
        except HTTPError:
            return True
        return False

    def _skip_empty_lines(self, buf: bytearray) -> None:
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
        # request-line (some clients send a CRLF after a POST body).
        while buf.startswith(b"\r\n"):
            del buf[:2]
            self._resume_at = 0

    def _check_partial_head(self) -> None:
        buf = self._buf
        self._check_forbidden_so_far(buf)
        limit = self.limits.request_line
        if limit and buf.find(b"\r\n", 0, limit + 2) < 0 and len(buf) > limit + 1:
            raise HTTPError(414, f"request line longer than {limit} bytes")
        if len(buf) >= self._max_head:  # (the head is longer: its end is not here yet)
            self._head_too_large()

    def _head_too_large(self) -> NoReturn:
        if self.limits.head and self._max_head == self.limits.head:
            raise HTTPError(431, f"request head longer than {self._max_head} bytes")
        raise HTTPError(431, "request head too large")

    def _incomplete_head(self):
        buf = self._buf
        self._check_partial_head()
        if self._eof:
            if buf:
                del buf[:]
                self._resume_at = 0
            return CONNECTION_CLOSED
        return NEED_DATA

    def _check_forbidden_so_far(self, buf: bytearray) -> None:
        """Refuse forbidden bytes in what has arrived of a head or trailer section,
        searching only what came since the last call. A final CR waits for the next
        byte: it may be the start of a CRLF."""
        stop = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        if FORBIDDEN.search(buf, self._resume_at, stop):
            self._raise_forbidden(bytes(buf))
        self._resume_at = max(0, len(buf) - 3)

    @staticmethod
    def _raise_forbidden(head: bytes):
        found = FORBIDDEN.search(head).group()
        if found == b"\r":
            raise HTTPError(400, "bare CR in request head")
        if found == b"\n":
            raise HTTPError(400, "bare LF in request head (lines must end in CRLF)")
        raise HTTPError(400, f"control character {found!r} in request head")

    def _parse_head(self, head: bytes) -> Request:
        if len(head) <= self._fast_head:
            m = HEAD.fullmatch(head.decode("latin-1"))
            if m is not None:
                method, target, minor, block = m.groups()
                fields = FIELDS.findall(block)
                if " \r" in block or "\t\r" in block or block.endswith((" ", "\t")):
                    # a value ends in OWS: strip it
                    fields = [(name, value.rstrip(OWS_TEXT)) for name, value in fields]
                if len(fields) > self.limits.fields:
                    raise HTTPError(431, f"more than {self.limits.fields} header fields")
                return self._frame(method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1",
                                   fields)
        # The careful path: find what is wrong with the head, and say it.
        if len(head) + 4 > self._max_head:  # (+ the CRLFCRLF that ended it)
            self._head_too_large()
        if FORBIDDEN.search(head):
            self._raise_forbidden(head)
        lines = head.split(b"\r\n")
        method, target, version = self._parse_request_line(lines[0])
        headers = self._parse_fields(lines, 1)
        return self._frame(method, target, version, headers)

    def _parse_request_line(self, line: bytes) -> tuple[str, str, str]:
        limit = self.limits.request_line
        if limit and len(line) > limit:
            raise HTTPError(414, f"request line longer than {limit} bytes")
        m = REQUEST_LINE.fullmatch(line)
        if m is None:
            raise HTTPError(400, "malformed request line")
        method, target, major, minor = m.groups()
        if major != b"1" or minor not in (b"0", b"1"):
            raise HTTPError(505, f"HTTP/{major.decode()}.{minor.decode()} is not supported")
        return method.decode("ascii"), target.decode("ascii"), "HTTP/1." + minor.decode()

    def _parse_fields(self, lines: list[bytes], start: int) -> list[tuple[str, str]]:
        limits = self.limits
        if len(lines) - start > limits.fields:
            raise HTTPError(431, f"more than {limits.fields} header fields")
        fields = []
        for line in lines[start:]:
            if limits.field_size and len(line) > limits.field_size:
                raise HTTPError(431, f"header field longer than {limits.field_size} bytes")
            m = FIELD_LINE.fullmatch(line)
            if m is None:
                if line[:1] in (b" ", b"\t"):
                    # RFC 9112 5.2: obs-fold; we reject rather than unfold.
                    raise HTTPError(400, "obsolete line folding in header")
                raise HTTPError(400, "malformed header field")
            value = m.group(2).strip(OWS)
            fields.append((m.group(1).decode("ascii"), value.decode("latin-1")))
        return fields

    # framing: decide where this message's body ends (RFC 9112 section 6) -------------
    def _frame(self, method: str, target: str, version: str, headers) -> Request:
        content_length = transfer_encoding = host = singles = None
        hosts = 0
        connection = expect = ""
        repeated = False
        for name, value in headers:
            key = name.lower()
            if key not in NOTED:
                continue
            if key in SINGLE_VALUE:
                if singles is None:
                    singles = {key: value}
                elif key not in singles:
                    singles[key] = value
                elif singles[key] == value:
                    repeated = True  # the same value again: kept once, below
                else:
                    raise HTTPError(400, f"two {name} fields with different values")
            elif key == "host":
                hosts += 1
                if host is None:
                    host = value
            elif key == "content-length":
                if content_length is not None:
                    raise HTTPError(400, "more than one Content-Length")
                content_length = self._content_length(value)
            elif key == "transfer-encoding":
                transfer_encoding = (
                    value if transfer_encoding is None else transfer_encoding + "," + value
                )
            elif key == "connection":
                connection += "," + value.lower()
            else:  # expect
                expect = value.lower()
        if repeated:
            headers = self._drop_repeats(headers)

        chunked = False
        if transfer_encoding is not None:
            if content_length is not None:
                # RFC 9112 6.1: the classic smuggling vector; refuse outright.
                raise HTTPError(400, "both Content-Length and Transfer-Encoding")
            if version == "HTTP/1.0":
                raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
            chunked = self._transfer_coding(transfer_encoding)
        elif content_length is not None:
            max_body = self.limits.max_body
            if max_body and content_length > max_body:
                raise HTTPError(413, f"body of {content_length} bytes exceeds {max_body}")

        # RFC 9112 3.2: exactly one Host in HTTP/1.1.
        if hosts > 1:
            raise HTTPError(400, "more than one Host header")
        if host is None and version == "HTTP/1.1":
            raise HTTPError(400, "HTTP/1.1 request without Host")
        if host is not None and host != self._valid_host:
            if not HOST.fullmatch(host):
                raise HTTPError(400, f"invalid Host {host[:64]!r}")
            self._valid_host = host

        path, query, target_host = self._split_target(method, target)
        if connection:
            tokens = {t.strip(OWS_TEXT) for t in connection.split(",")}
            if version == "HTTP/1.1":
                keep_alive = "close" not in tokens
            else:
                keep_alive = "keep-alive" in tokens and "close" not in tokens
        else:
            keep_alive = version == "HTTP/1.1"
        return Request(  # positional: fields in the order the class declares them
            method, target, path, query, version, tuple(headers), content_length, chunked,
            keep_alive, expect == "100-continue" and version == "HTTP/1.1",
            target_host if target_host is not None else host,
        )

    @staticmethod
    def _drop_repeats(headers) -> list[tuple[str, str]]:
        """Keep the first of each single-value field (the others repeat its value), so
        that the app sees `text/plain`, not `text/plain, text/plain`."""
        seen = set()
        kept = []
        for name, value in headers:
            key = name.lower()
            if key in SINGLE_VALUE:
                if key in seen:
                    continue
                seen.add(key)
            kept.append((name, value))
        return kept

    @staticmethod
    def _content_length(value: str) -> int:
        # Content-Length = 1*DIGIT. int() would also take "+5", " 5", "5_0" and "٥".
        if not value.isascii() or not value.isdigit():
            raise HTTPError(400, f"malformed Content-Length {value!r}")
        if len(value) > 18:
            raise HTTPError(400, "Content-Length too large")
        return int(value)

    @staticmethod
    def _transfer_coding(value: str) -> bool:
        # Strip only OWS (SP, HTAB): str.strip() would also take "\xa0" or "\x85" off
        # "chunked\xa0", a value a proxy in front may not read as chunked at all.
        codings = [c.strip(OWS_TEXT) for c in value.split(",")]
        for coding in codings:
            if not re.fullmatch(TOKEN.decode(), coding):
                raise HTTPError(400, f"malformed Transfer-Encoding {value!r}")
        codings = [c.lower() for c in codings]
        if codings != ["chunked"]:
            # RFC 9112 6.1: only a single, final chunked is a body we can delimit.
            raise HTTPError(501, f"unsupported Transfer-Encoding {value!r}")
        return True

    @staticmethod
    def _split_target(method: str, target: str) -> tuple[str, str, str | None]:
        """Return (path, query, host-from-target) for the four request-target forms."""
        if "#" in target:
            raise HTTPError(400, "fragment in request target")
        if method == "CONNECT":
            # RFC 9110 9.3.6: a tunnel, which a WSGI origin server does not make; 501 is
            # what a server answers a method it does not implement (RFC 9110 9.1,
            # 15.6.2). Whatever the target's form: handed to an app that answers 2xx,
            # a proxy in front would take the connection for an open tunnel.
            raise HTTPError(501, "CONNECT is not supported")
        host = None
        if target[0] != "/":
            if target == "*" and method == "OPTIONS":  # asterisk-form: PATH_INFO is ""
                return "", "", None  # (CGI: empty or "/..."); RAW_URI keeps the "*"
            m = ABSOLUTE_FORM.fullmatch(target)  # absolute-form (RFC 9112 3.2.2)
            if m is None:
                raise HTTPError(400, "malformed request target")
            host = m.group(2)
            # RFC 9110 4.2.1: an http(s) URI with an empty host MUST be rejected;
            # RFC 9110 4.2.4: userinfo in one SHOULD be treated as an error.
            valid = HOST.fullmatch(host)
            if valid is None or not valid.group(1):
                raise HTTPError(400, f"invalid authority in request target {host[:64]!r}")
            target = m.group(3) or "/"
            if target[0] != "/":
                target = "/" + target
        path, _, query = target.partition("?")
        return path, query, host

    def _start_body(self, request: Request) -> None:
        self._body_seen = 0
        if request.chunked:
            self._state = _CHUNK_SIZE
        elif request.content_length:
            self._state = _LENGTH
            self._remaining = request.content_length
        else:
            self._state = _END  # no body: EndOfMessage comes next

    # bodies ------------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        n = min(n, MAX_DATA)
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)
            del buf[:]
        else:
            data = bytes(buf[:n])
            del buf[:n]
        return data

    def _next_length_data(self):
        if not self._buf:
            if self._eof:
                raise ClientDisconnected("client closed the connection mid-body")
            return NEED_DATA
        data = self._take(self._remaining)
        self._remaining -= len(data)
        if self._remaining == 0:
            self._state = _END
        return Data(data)

    def _next_chunked(self):
        while True:
            state = self._state
            buf = self._buf
            if state == _CHUNK_DATA:
                if not buf:
                    return self._need_body_data()
                data = self._take(self._remaining)
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._state = _CHUNK_END
                return Data(data)
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= MAX_CHUNK_LINE or b"\n" in buf:
                        raise HTTPError(400, "malformed chunk size line")
                    return self._need_body_data()
                self._start_chunk(bytes(buf[:end]))
                del buf[: end + 2]
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    if buf[:1] not in (b"", b"\r"):
                        raise HTTPError(400, "chunk data not followed by CRLF")
                    return self._need_body_data()
                if buf[:2] != b"\r\n":
                    raise HTTPError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                return self._next_trailers()

    def _start_chunk(self, line: bytes) -> None:
        m = CHUNK_SIZE_LINE.fullmatch(line)
        if m is None:
            raise HTTPError(400, f"malformed chunk size {line[:32]!r}")
        size = int(m.group(1), 16)
        if size == 0:
            self._state = _TRAILERS
            return
        self._body_seen += size
        max_body = self.limits.max_body
        if max_body and self._body_seen > max_body:
            raise HTTPError(413, f"chunked body exceeds {max_body} bytes")
        self._remaining = size
        self._state = _CHUNK_DATA

    def _next_trailers(self):
        buf = self._buf
        if buf[:2] == b"\r\n":
            del buf[:2]
            self._state = _HEAD
            return END_OF_MESSAGE
        end = buf.find(b"\r\n\r\n", self._resume_at)
        if end < 0:
            if len(buf) >= self._max_head:
                raise HTTPError(431, "trailer section too large")
            self._check_forbidden_so_far(buf)
            return self._need_body_data()
        if end + 4 > self._max_head:
            raise HTTPError(431, "trailer section too large")
        block = bytes(buf[:end])
        del buf[: end + 4]
        self._resume_at = 0
        if FORBIDDEN.search(block):
            self._raise_forbidden(block)
        trailers = self._parse_fields(block.split(b"\r\n"), 0)
        self._state = _HEAD
        return EndOfMessage(tuple(trailers))

    def _need_body_data(self):
        if self._eof:
            raise ClientDisconnected("client closed the connection mid-body")
        return NEED_DATA
