"""wsgi.input and wsgi.file_wrapper (PEP 3333, "Input and Error Streams", "Optional
Platform-Specific File Handling")."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable


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
