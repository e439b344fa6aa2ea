"""The events a RequestParser hands out: Request, Data*, EndOfMessage (and
ConnectionClosed, or NEED_DATA when it needs more bytes)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

# dataclass(slots=True) is Python 3.10+; PyPy on Debian 12 is Python 3.9, where the
# events are plain dataclasses (PyPy's instance maps make slots matter little there).
SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}


@dataclass(**SLOTS)  # not frozen: a frozen __init__ costs ~1 us per request
class Request:
    method: str
    target: str  # the request-target as sent (latin-1 text)
    path: str  # still percent-encoded; the WSGI layer decodes it
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]  # (name as sent, value), in order
    content_length: int | None
    chunked: bool
    keep_alive: bool  # what the client asked for; the response may still close
    expect_continue: bool
    host: str | None  # from an absolute-form target, else the Host header


@dataclass(**SLOTS)
class Data:
    data: bytes


@dataclass(frozen=True, **SLOTS)
class EndOfMessage:
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, **SLOTS)
class ConnectionClosed:
    """The peer ended its side of the stream between requests."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

END_OF_MESSAGE = EndOfMessage()
CONNECTION_CLOSED = ConnectionClosed()
