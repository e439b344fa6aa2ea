"""The bench's own WSGI app: `hello:app`, the same callable for every server.

Plain WSGI, no framework, so the server is the whole cost:
  /            a 13-byte hello with Content-Length (scenarios hello, hello-close, c1,
               idle-1000, scale-2w)
  /stream64k   64 KiB as 16 chunks of 4 KiB from a generator, no Content-Length, so
               an HTTP/1.1 server streams it chunked (scenario stream-64k)
  /echo        POST: reads the body to EOF and answers its length (scenario post-1m)
"""

from __future__ import annotations

HELLO = b"Hello, World!"
CHUNK = b"x" * 4096
READ_SIZE = 64 * 1024


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def stream64k(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (CHUNK for _ in range(16))


def echo(environ, start_response):
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    length = 0
    while remaining > 0:
        chunk = stream.read(min(READ_SIZE, remaining))
        if not chunk:
            break
        length += len(chunk)
        remaining -= len(chunk)
    body = b"%d\n" % length
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {"/": hello, "/stream64k": stream64k, "/echo": echo}


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]


def app(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO", "/"), not_found)(environ, start_response)
