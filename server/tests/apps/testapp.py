"""The functional tests' WSGI app: every route exercises one part of PEP 3333.

Served as `testapp:app`, wrapped in wsgiref.validate.validator so any contract slip
(by us or by it) shows up as a WSGIWarning or AssertionError in the server output.
"""

import hashlib
import json
import os
import sys
import time
import wsgiref.validate
from urllib.parse import parse_qs

CLOSE_LOG = os.environ.get("TESTAPP_CLOSE_LOG")  # a file: one line per close() call
# Set: /sleep says on stderr (the server's log) when it begins, so that a test knows
# its request is in the app from the log, not from a guessed sleep of its own.
ANNOUNCE = os.environ.get("TESTAPP_ANNOUNCE")


class Body:
    """An iterable with close(), recording each close so tests can count them."""

    def __init__(self, chunks, tag, fail_at=None):
        self.chunks, self.tag, self.fail_at = chunks, tag, fail_at

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("boom mid-stream")
            yield chunk

    def close(self):
        if CLOSE_LOG:
            with open(CLOSE_LOG, "a") as f:
                f.write(f"{self.tag}\n")


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    text = [("Content-Type", "text/plain")]
    if path == "/hello":
        start_response("200 OK", text)
        return [b"Hello, World!\n"]
    if path == "/echo":
        stream, parts = environ["wsgi.input"], []
        while part := stream.read(65536):  # no size: the validator insists on one
            parts.append(part)
        body = b"".join(parts)
        out = json.dumps({"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                          "content_length": environ.get("CONTENT_LENGTH")}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out]
    if path == "/read-exactly":  # to Content-Length and no further, as frameworks do
        stream, left, length = environ["wsgi.input"], int(environ["CONTENT_LENGTH"]), 0
        while left > 0 and (part := stream.read(min(left, 65536))):
            length, left = length + len(part), left - len(part)
        start_response("200 OK", text)
        return [b"%d\n" % length]
    if path == "/lines":  # readline/iteration over wsgi.input
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([line.decode("latin-1") for line in lines]).encode()]
    if path == "/head-empty":  # streams for GET, sends nothing for HEAD (as werkzeug)
        start_response("200 OK", text)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else (b"x" * 10 for _ in range(3))
    if environ.get("RAW_URI") == "*":  # OPTIONS *: about the server, not a resource
        start_response("200 OK", [*text, ("Allow", "GET, HEAD, POST, OPTIONS")])
        return [json.dumps({"PATH_INFO": path}).encode()]
    if path == "/ignore-body":
        start_response("200 OK", text)
        return [b"ignored\n"]
    if path == "/stream":
        n = int(query.get("n", "3"))
        start_response("200 OK", text)
        return Body([f"chunk {i}\n".encode() for i in range(n)], "stream")
    if path == "/big-stream":  # many pieces, each made as it is asked for
        pieces, size = int(query.get("pieces", "100")), int(query.get("size", "65536"))
        start_response("200 OK", text)
        return Body((bytes([65 + i % 26]) * size for i in range(pieces)), "big-stream")
    if path.startswith("/environ"):
        keys = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(keys).encode()]
    if path == "/sleep":
        if ANNOUNCE:
            print(f"testapp: /sleep?s={query.get('s', '1')} began", file=sys.stderr, flush=True)
        time.sleep(float(query.get("s", "1")))
        start_response("200 OK", text)
        return [f"slept {query.get('s', '1')}\n".encode()]
    if path == "/pid":
        start_response("200 OK", text)
        return [f"{os.getpid()}\n".encode()]
    if path == "/getenv":  # /getenv?name=X: the serving process's os.environ[X], or -
        start_response("200 OK", text)
        return [f"{os.environ.get(query.get('name', ''), '-')}\n".encode()]
    if path == "/error":
        raise RuntimeError("boom before start_response")
    if path == "/error-mid-stream":
        start_response("200 OK", text)
        return Body([b"a" * 10, b"b" * 10, b"c"], "error-mid-stream", fail_at=2)
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        return [b"and returned\n"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    if path == "/big-file":  # TESTAPP_BIG_FILE through wsgi.file_wrapper
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(os.environ["TESTAPP_BIG_FILE"], "rb"))
    if path == "/length":
        body = b"x" * int(query.get("n", "10"))
        start_response("200 OK", [*text, ("Content-Length", str(len(body)))])
        return Body([body], "length")
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    if path == "/exc-info":
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("200 OK", text)
            start_response("500 Internal Server Error", text, sys.exc_info())
        return [b"replaced\n"]
    start_response("404 Not Found", text)
    return [b"not found\n"]


def bad_app(environ, start_response):
    """Apps that break the contract; not validated (the validator would stop them first)."""
    path = environ["PATH_INFO"]
    if path == "/hop-by-hop":
        start_response("200 OK", [("Connection", "keep-alive")])
        return [b"x"]
    if path == "/crlf-header":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: b")])
        return [b"x"]
    if path == "/str-body":
        start_response("200 OK", [])
        return ["not bytes"]
    if path == "/no-start":
        return [b"forgot start_response"]
    if path == "/interim-status":  # a 1xx is not a final response
        start_response("102 Processing", [])
        return []
    if path == "/two-content-lengths":  # a client trusting the first would desync
        start_response("200 OK", [("Content-Length", "1"), ("Content-Length", "5")])
        return [b"xxxxx"]
    if path == "/exit":
        raise SystemExit(3)
    # The status and fields /hello sends (so wizgy has them checked and cached), but
    # not as PEP 3333 says: a tuple of fields, a bytes status.
    if path == "/tuple-headers":
        start_response("200 OK", (("Content-Type", "text/plain"),))
        return [b"x"]
    if path == "/bytes-status":
        start_response(b"200 OK", [("Content-Type", "text/plain")])
        return [b"x"]
    return raw_app(environ, start_response)


app = wsgiref.validate.validator(raw_app)
