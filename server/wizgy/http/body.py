"""Body readers, sans-IO (RFC 9112 section 6-7): once the parser has framed a head,
one of these takes the body's bytes out of the parser's buffer, as Data events.

    ContentLengthReader   exactly Content-Length bytes (6.2)
    ChunkedReader         chunk-size line, chunk data, CRLF, ... up to the last chunk (7.1)

Each one's `next_event(buf, eof)` returns Data, NEED_DATA, or None once the body's
bytes have all been handed out; the parser then gives EndOfMessage (after reading the
trailer section of a chunked body, which is field lines, as a head is). A client that
closes mid-body raises ClientDisconnected: there is no one to answer.

Chunk framing is strict: a chunk-size line with a bare LF, or chunk data not followed
by exactly CRLF, is refused (h11's lenient chunk endings were CVE-2025-43859).
"""

from __future__ import annotations

from .abnf import CHUNK_SIZE_LINE
from .errors import ClientDisconnected, HTTPError
from .events import NEED_DATA, Data

MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions; longer is abuse
# The most body bytes one Data event carries. A body may sit whole in the buffer (a
# selector loop waits for bodies up to 1 MiB): handing it out in pieces this size lets
# a reader asking for 64 KiB at a time take each piece without copying the rest.
MAX_DATA = 1 << 16

_SIZE, _DATA, _DATA_END = range(3)  # where a ChunkedReader is in a chunk


class ContentLengthReader:
    """A body of exactly Content-Length bytes."""

    __slots__ = ("remaining",)
    trailers = False

    def __init__(self, length: int) -> None:
        self.remaining = length

    @property
    def done(self) -> bool:
        """All the body is handed out: EndOfMessage comes next, with no more to read."""
        return self.remaining == 0

    def next_event(self, buf: bytearray, eof: bool):
        remaining = self.remaining
        if not remaining:
            return None
        if not buf:
            return need_data(eof)
        data = take(buf, remaining)
        self.remaining = remaining - len(data)
        return Data(data)


class ChunkedReader:
    """A chunked body, up to its last chunk; `max_body` bounds the sum of its sizes."""

    __slots__ = ("_state", "remaining", "seen", "max_body")
    trailers = True  # a trailer section follows the last chunk
    done = False  # (its end is read as the trailer section's)

    def __init__(self, max_body: int) -> None:
        self._state = _SIZE
        self.remaining = 0  # bytes left in this chunk
        self.seen = 0  # body bytes so far, for --max-body
        self.max_body = max_body

    def next_event(self, buf: bytearray, eof: bool):
        while True:
            state = self._state
            if state == _DATA:
                if not buf:
                    return need_data(eof)
                data = take(buf, self.remaining)
                self.remaining -= len(data)
                if self.remaining == 0:
                    self._state = _DATA_END
                return Data(data)
            if state == _SIZE:
                end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE)
                if end < 0:
                    if len(buf) >= MAX_CHUNK_LINE or b"\n" in buf:
                        raise HTTPError(400, "malformed chunk size line")
                    return need_data(eof)
                last = self._start_chunk(bytes(buf[:end]))
                del buf[: end + 2]
                if last:
                    return None  # the trailer section follows
            else:  # _DATA_END
                if len(buf) < 2:
                    if buf[:1] not in (b"", b"\r"):
                        raise HTTPError(400, "chunk data not followed by CRLF")
                    return need_data(eof)
                if buf[:2] != b"\r\n":
                    raise HTTPError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = _SIZE

    def _start_chunk(self, line: bytes) -> bool:
        """Read a chunk-size line; True if it is the last chunk's (size 0)."""
        m = CHUNK_SIZE_LINE.fullmatch(line)
        if m is None:
            raise HTTPError(400, f"malformed chunk size {line[:32]!r}")
        size = int(m.group(1), 16)
        if size == 0:
            return True
        self.seen += size
        max_body = self.max_body
        if max_body and self.seen > max_body:
            raise HTTPError(413, f"chunked body exceeds {max_body} bytes")
        self.remaining = size
        self._state = _DATA
        return False


def take(buf: bytearray, n: int) -> bytes:
    """Up to n bytes (and MAX_DATA) off the front of buf."""
    n = min(n, MAX_DATA)
    if n >= len(buf):
        data = bytes(buf)
        del buf[:]
    else:
        data = bytes(buf[:n])
        del buf[:n]
    return data


def need_data(eof: bool):
    """NEED_DATA, unless the client has closed mid-body."""
    if eof:
        raise ClientDisconnected("client closed the connection mid-body")
    return NEED_DATA
