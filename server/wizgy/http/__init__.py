"""HTTP/1.1, server side, sans-IO: bytes in, events out; responses the server writes.

    abnf.py     the grammar: named regexes under the RFC text they encode
    events.py   Request, Data, EndOfMessage, ConnectionClosed, NEED_DATA
    errors.py   HTTPError (a status and a reason), ClientDisconnected, REASONS
    parser.py   RequestParser: one connection's receive buffer -> events (the head
                and trailers; the body to a reader of body.py); Limits
    framing.py  frame(): where a request's body ends, and heads refused as ambiguous
    body.py     ContentLengthReader, ChunkedReader: a framed body's bytes -> Data
    writer.py   the Date line and the error responses the server answers itself

Nothing in this package touches a socket, a clock, a thread or the OS: everything
above it (wsgi, the request cycle, the connection) can be tested with bytes.
"""

from .abnf import FRAMING, SINGLE_VALUE
from .errors import REASONS, ClientDisconnected, HTTPError
from .events import CONNECTION_CLOSED, END_OF_MESSAGE, NEED_DATA, ConnectionClosed, Data, \
    EndOfMessage, Request
from .body import MAX_DATA
from .parser import Limits, RequestParser
from .writer import SERVER_SOFTWARE, date_line, error_response, http_date

__all__ = [
    "CONNECTION_CLOSED", "END_OF_MESSAGE", "FRAMING", "MAX_DATA", "NEED_DATA", "REASONS",
    "SERVER_SOFTWARE", "SINGLE_VALUE", "ClientDisconnected", "ConnectionClosed", "Data",
    "EndOfMessage", "HTTPError", "Limits", "Request", "RequestParser", "date_line",
    "error_response", "http_date",
]
