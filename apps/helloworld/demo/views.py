"""The workshop's routes, as Django views."""

import hashlib
import math
import time

from django.http import (
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

CHUNK_SIZE = 64 * 1024
MAX_SLEEP = 120.0


def digest(stream):
    """Read a binary stream to EOF in chunks; return (length, sha256 hex)."""
    sha256 = hashlib.sha256()
    length = 0
    while chunk := stream.read(CHUNK_SIZE):
        sha256.update(chunk)
        length += len(chunk)
    return length, sha256.hexdigest()


def body_stream(request):
    """The request body as a stream that ends where the body ends.

    Django bounds its own stream by CONTENT_LENGTH (0 when absent). A chunked
    request has none; PEP 3333's wsgi.input_terminated says the server's
    wsgi.input then returns b"" at the end of the body, so it is read directly.
    """
    if not request.META.get("CONTENT_LENGTH") and request.META.get(
        "wsgi.input_terminated"
    ):
        return request.META["wsgi.input"]
    return request


def query_number(request, name, default, kind):
    try:
        value = kind(request.GET.get(name, default))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@require_GET
def hello(request):
    return HttpResponse("Hello, World! from Django\n", content_type="text/plain")


@csrf_exempt
@require_POST
def echo(request):
    length, sha256 = digest(body_stream(request))
    return JsonResponse({"length": length, "sha256": sha256})


@require_GET
def stream(request):
    n = query_number(request, "n", 10, int)
    if n is None:
        return HttpResponseBadRequest("n must be a number\n")

    def generate():
        for i in range(n):
            yield f"chunk {i}\n"

    # A streaming response has no Content-Length: the server frames the body.
    return StreamingHttpResponse(generate(), content_type="text/plain")


@require_GET
def headers(request):
    return JsonResponse(
        {
            "headers": dict(request.headers),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
        }
    )


@require_GET
def sleep(request):
    seconds = query_number(request, "s", 1.0, float)
    if seconds is None:
        return HttpResponseBadRequest("s must be a number\n")
    seconds = min(max(seconds, 0.0), MAX_SLEEP)
    time.sleep(seconds)
    return HttpResponse(f"Slept {seconds:g}s in Django\n", content_type="text/plain")


@csrf_exempt
@require_POST
def upload(request):
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return HttpResponseBadRequest("multipart field 'file' is required\n")
    size, sha256 = digest(uploaded)
    return JsonResponse({"filename": uploaded.name, "size": size, "sha256": sha256})
