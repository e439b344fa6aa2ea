"""HTTP/1.1 request parsing, sans-IO: bytes in, events out (RFC 9112, server side).

Theory of operation
-------------------
A `RequestParser` owns one connection's receive buffer. The connection driver calls
`receive(data)` with whatever the socket gave it (b"" for end of stream) and then
`next_event()` until it returns `NEED_DATA`. A request comes out as:

    Request  ->  Data* ->  EndOfMessage

after which the parser is ready for the next (pipelined) request, which may already
sit in the buffer. Nothing here touches a socket, a clock or a thread.

The head is parsed in one pass: find the blank line, then read it by the first of
three ways that takes it: `plain_head` (str methods, for the plainest heads), the
whole-head regex HEAD (abnf.py), or the careful path, which rejects stray
CR/LF/control bytes and matches the request line and each field line against the
ABNF written out in abnf.py, saying what is wrong. framing.py's `frame()` then
decides where the body ends (Content-Length, Transfer-Encoding), and a body reader
from body.py hands the body out (ContentLengthReader, ChunkedReader); the parser
reads a chunked body's trailer section itself, since it is field lines, as a head
is. All of it is strict: a request
that two parsers could read two ways is refused, never guessed at, because that
ambiguity is what request smuggling exploits (RFC 9112 section 11.2).

Errors are raised as `HTTPError(status, message)`; the caller answers with that
status, `Connection: close`, and closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from .abnf import FIELD_LINE, FIELDS, FORBIDDEN, HEAD, OWS, OWS_TEXT, REQUEST_LINE
from .body import ChunkedReader, ContentLengthReader, need_data
from .errors import HTTPError
from .events import CONNECTION_CLOSED, END_OF_MESSAGE, NEED_DATA, SLOTS, EndOfMessage, Request
from .framing import frame


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

_HEAD, _END, _BODY, _TRAILERS = range(4)  # _END: EndOfMessage next, with no more to read
# An idle connection's buffer: shared, and never written to (receive() makes a
# bytearray when bytes come). A connection keeps no buffer of its own between
# requests: on PyPy one made for a request and kept until the next is still young at
# each minor collection, and is copied out of the nursery (64 connections: 10 KB a
# collection, most of what survived one; pypy-jit.md, "What survives").
EMPTY = b""


class RequestParser:
    """One connection's request stream. See the module docstring for the flow."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf: bytearray | bytes = EMPTY
        self._eof = False
        self._state = _HEAD
        self._body: ContentLengthReader | ChunkedReader | None = None  # in _BODY: its reader
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
    def receive(self, data: bytes | memoryview) -> None:
        if data:
            if self._buf:
                self._buf += data
            else:
                self._buf = bytearray(data)
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
        state = self._state
        return state == _END or state == _BODY and self._body.done

    def next_event(self):
        state = self._state
        if state == _HEAD:
            return self._next_head()
        if state == _END:
            self._state = _HEAD
            return END_OF_MESSAGE
        if state == _BODY:
            body = self._body
            event = body.next_event(self._buf, self._eof)
            if event is not None:
                return event  # Data or NEED_DATA
            if not body.trailers:  # all of a Content-Length body is read
                self._state = _HEAD
                return END_OF_MESSAGE
            self._state = _TRAILERS
        return self._next_trailers()

    # head ----------------------------------------------------------------------
    def _next_head(self):
        buf = self._buf
        if buf.startswith(b"\r\n"):
            self._skip_empty_lines(buf)
        end = buf.find(b"\r\n\r\n", self._resume_at)
        if end < 0:
            return self._incomplete_head()
        head = bytes(buf[:end])
        if end + 4 == len(buf):
            self._buf = EMPTY  # (the usual case: nothing pipelined behind it)
        else:
            del buf[: end + 4]
        self._resume_at = 0
        request = self._parse_head(head)
        if request.host != self._valid_host:  # it passed HOST (framing.py): clients
            self._valid_host = request.host  # repeat theirs (kept once: see EMPTY)
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
            raise_forbidden(bytes(buf))
        self._resume_at = max(0, len(buf) - 3)

    def _parse_head(self, head: bytes) -> Request:
        if len(head) <= self._fast_head:
            text = head.decode("latin-1")
            parts = plain_head(text) or matched_head(text)
            if parts is not None:
                method, target, version, fields = parts
                if len(fields) > self.limits.fields:
                    raise HTTPError(431, f"more than {self.limits.fields} header fields")
                return frame(method, target, version, fields, self.limits.max_body,
                             self._valid_host)
        # The careful path: find what is wrong with the head, and say it.
        if len(head) + 4 > self._max_head:  # (+ the CRLFCRLF that ended it)
            self._head_too_large()
        if FORBIDDEN.search(head):
            raise_forbidden(head)
        lines = head.split(b"\r\n")
        method, target, version = self._parse_request_line(lines[0])
        headers = self._parse_fields(lines, 1)
        return frame(method, target, version, headers, self.limits.max_body, self._valid_host)

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

    def _start_body(self, request: Request) -> None:
        if request.chunked:
            self._state = _BODY
            self._body = ChunkedReader(self.limits.max_body)
        elif request.content_length:
            self._state = _BODY
            self._body = ContentLengthReader(request.content_length)
        else:
            self._state = _END  # no body: EndOfMessage comes next

    # the trailer section: field lines after a chunked body's last chunk (RFC 9112 7.1.2)
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
            return need_data(self._eof)
        if end + 4 > self._max_head:
            raise HTTPError(431, "trailer section too large")
        block = bytes(buf[:end])
        del buf[: end + 4]
        self._resume_at = 0
        if FORBIDDEN.search(block):
            raise_forbidden(block)
        trailers = self._parse_fields(block.split(b"\r\n"), 0)
        self._state = _HEAD
        return EndOfMessage(tuple(trailers))


def plain_head(text: str):
    """The plainest heads, read with str methods alone: (method, target, version,
    fields), or None for anything else, which HEAD then decides. On PyPy this costs
    half of HEAD and findall's time and a fifth of their garbage (their regex engine
    allocates as it matches: 6.7 KB a wrk head, against 1.7; server/docs/pypy-jit.md,
    candidate 4), and on CPython it is no slower. Everything it accepts HEAD accepts
    and reads the same (test_fuzz.py checks that on generated heads):
    a method of ASCII letters (tokens), one space, a target of visible ASCII
    (isprintable less the space the partition took), one space, HTTP/1.1 or HTTP/1.0;
    then fields whose names are ASCII letters, digits and "-" (tokens) and whose values
    are printable (no control byte, no HTAB, no C1 control nor NBSP; any of those goes
    to HEAD), the spaces around a value stripped as OWS. A head holds no empty line
    (it ends at the first), so every line here has been split off at a CRLF; a lone CR
    or LF is not printable."""
    lines = text.split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if not (version == "HTTP/1.1" or version == "HTTP/1.0") or not method.isalpha() \
            or not method.isascii() or not target or not target.isascii() \
            or not target.isprintable():
        return None
    fields = []
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(":")
        if not colon or not name.isascii() or not value.isprintable() \
                or not (name.isalnum() or name.replace("-", "").isalnum()):
            return None
        fields.append((name, value.strip(" ")))
    return method, target, version, fields


def matched_head(text: str):
    """A head the whole of HEAD matches: (method, target, version, fields), or None."""
    m = HEAD.fullmatch(text)
    if m is None:
        return None
    method, target, minor, block = m.groups()
    fields = FIELDS.findall(block)
    if " \r" in block or "\t\r" in block or block.endswith((" ", "\t")):
        # a value ends in OWS: strip it
        fields = [(name, value.rstrip(OWS_TEXT)) for name, value in fields]
    return method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1", fields


def raise_forbidden(head: bytes) -> NoReturn:
    """Say which forbidden byte a head (or trailer section) holds."""
    found = FORBIDDEN.search(head).group()
    if found == b"\r":
        raise HTTPError(400, "bare CR in request head")
    if found == b"\n":
        raise HTTPError(400, "bare LF in request head (lines must end in CRLF)")
    raise HTTPError(400, f"control character {found!r} in request head")
