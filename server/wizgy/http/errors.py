"""What the peer did wrong, and the status it gets for it."""

from __future__ import annotations

REASONS = {
    100: "Continue",
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HTTPError(Exception):
    """The peer sent something we refuse. Knows its status; the driver renders it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {REASONS.get(self.status, '')}: {self.message}"



class ClientDisconnected(ConnectionError):
    """The peer went away in the middle of a request body."""
