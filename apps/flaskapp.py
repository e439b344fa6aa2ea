"""The workshop's Flask app: `wizgy --chdir apps flaskapp:app`.

Written as Flask's quickstart shows; nothing here knows which server runs it.
Every route is one the lessons and the load test lean on.
"""

import hashlib
import math
import time

from flask import Flask, Response, abort, jsonify, request

CHUNK_SIZE = 64 * 1024
MAX_SLEEP = 120.0

# static_folder is resolved against this file's folder: apps/static/hello.txt.
app = Flask(__name__, static_folder="static", static_url_path="/static")


def digest(stream):
    """Read a binary stream to EOF in chunks; return (length, sha256 hex)."""
    sha256 = hashlib.sha256()
    length = 0
    while chunk := stream.read(CHUNK_SIZE):
        sha256.update(chunk)
        length += len(chunk)
    return length, sha256.hexdigest()


@app.get("/hello")
def hello():
    return Response("Hello, World! from Flask\n", mimetype="text/plain")


@app.post("/echo")
def echo():
    # request.stream is the raw body: bounded by Content-Length, or read to EOF
    # when the server sets wsgi.input_terminated (chunked request bodies).
    length, sha256 = digest(request.stream)
    return jsonify(length=length, sha256=sha256)


@app.get("/stream")
def stream():
    n = request.args.get("n", 10, type=int)

    def generate():
        for i in range(n):
            yield f"chunk {i}\n"

    # A generator body: Flask sets no Content-Length, so the server must frame it.
    return Response(generate(), mimetype="text/plain")


@app.get("/headers")
def headers():
    return jsonify(
        headers=dict(request.headers),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
    )


@app.get("/sleep")
def sleep():
    seconds = request.args.get("s", 1.0, type=float)
    if not math.isfinite(seconds):
        abort(400)
    seconds = min(max(seconds, 0.0), MAX_SLEEP)
    time.sleep(seconds)
    return Response(f"Slept {seconds:g}s in Flask\n", mimetype="text/plain")


@app.post("/upload")
def upload():
    uploaded = request.files.get("file")
    if uploaded is None:
        abort(400, "multipart field 'file' is required")
    size, sha256 = digest(uploaded.stream)
    return jsonify(filename=uploaded.filename, size=size, sha256=sha256)
