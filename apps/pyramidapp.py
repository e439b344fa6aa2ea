"""The workshop's Pyramid app: `wizgy --chdir apps pyramidapp:app`.

Written as Pyramid's "Hello World" and view_config docs show; nothing here knows
which server runs it.
"""

import hashlib
import math
import os
import time

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPBadRequest
from pyramid.response import Response
from pyramid.view import view_config

CHUNK_SIZE = 64 * 1024
MAX_SLEEP = 120.0
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def digest(stream):
    """Read a binary stream to EOF in chunks; return (length, sha256 hex)."""
    sha256 = hashlib.sha256()
    length = 0
    while chunk := stream.read(CHUNK_SIZE):
        sha256.update(chunk)
        length += len(chunk)
    return length, sha256.hexdigest()


def query_number(request, name, default, kind):
    try:
        value = kind(request.params.get(name, default))
    except ValueError:
        raise HTTPBadRequest(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise HTTPBadRequest(f"{name} must be finite")
    return value


@view_config(route_name="hello", request_method="GET")
def hello(request):
    return Response("Hello, World! from Pyramid\n", content_type="text/plain")


@view_config(route_name="echo", request_method="POST", renderer="json")
def echo(request):
    # body_file streams the body; WebOb reads to EOF when the server sets
    # wsgi.input_terminated and sends no Content-Length (chunked bodies).
    length, sha256 = digest(request.body_file)
    return {"length": length, "sha256": sha256}


@view_config(route_name="stream", request_method="GET")
def stream(request):
    n = query_number(request, "n", 10, int)

    def generate():
        for i in range(n):
            yield f"chunk {i}\n".encode()

    # app_iter without a Content-Length: the server frames the body.
    return Response(app_iter=generate(), content_type="text/plain")


@view_config(route_name="headers", request_method="GET", renderer="json")
def headers(request):
    return {
        "headers": dict(request.headers),
        "remote_addr": request.remote_addr,
        "scheme": request.scheme,
    }


@view_config(route_name="sleep", request_method="GET")
def sleep(request):
    seconds = min(max(query_number(request, "s", 1.0, float), 0.0), MAX_SLEEP)
    time.sleep(seconds)
    return Response(f"Slept {seconds:g}s in Pyramid\n", content_type="text/plain")


@view_config(route_name="upload", request_method="POST", renderer="json")
def upload(request):
    field = request.POST.get("file")
    if field is None or not hasattr(field, "file"):
        raise HTTPBadRequest("multipart field 'file' is required")
    size, sha256 = digest(field.file)
    return {"filename": field.filename, "size": size, "sha256": sha256}


with Configurator() as config:
    for name in ("hello", "echo", "stream", "headers", "sleep", "upload"):
        config.add_route(name, f"/{name}")
    config.add_static_view(name="static", path=STATIC_DIR)
    config.scan()
    app = config.make_wsgi_app()
