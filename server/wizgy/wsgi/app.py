"""Calling the application and sending what it returns (PEP 3333): the iterable is
always closed, exactly once; a response may pause while the client is behind."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .input import FileWrapper
from .response import AppError, Response


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
        if type(result) in (list, tuple) and len(result) == 1:  # the hot path: _close()
            if not resp.send_single(result[0]):  # written out, a call fewer a request
                _end(resp)
            return None
        paused = _send_pieces(result, iter(result), resp, behind)
        return paused
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
