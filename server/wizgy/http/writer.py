"""Writing responses the server composes itself: the Date line and error responses.

Sans-IO like the parser: no socket and no clock. The caller passes the time
(`time.time()`), so that this layer stays testable with fixed dates.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import REASONS

SERVER_SOFTWARE = "wizgy"

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list = [0, "", b""]  # second, IMF-fixdate, b"Date: ...\r\n"


def http_date(now: float) -> str:
    """RFC 9110 5.6.7 IMF-fixdate of `now`, recomputed at most once a second."""
    second = int(now)
    if second != _date_cache[0]:
        t = datetime.fromtimestamp(second, timezone.utc)  # (a conversion, not a clock)
        date = f"{_WEEKDAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month]} {t.year} " \
               f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
        _date_cache[:] = [second, date, f"Date: {date}\r\n".encode("ascii")]
    return _date_cache[1]


def date_line(now: float) -> bytes:
    """The response's Date field line for `now`, as bytes."""
    if int(now) != _date_cache[0]:
        http_date(now)
    return _date_cache[2]


def error_response(status: int, message: str, now: float, *, keep_alive: bool = False) -> bytes:
    """A short plain-text response for errors the server answers itself."""
    body = f"{status} {REASONS.get(status, '')}\n{message}\n".encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {http_date(now)}\r\nServer: {SERVER_SOFTWARE}\r\n"
        f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n"
    )
    return head.encode("latin-1") + body
