"""The smuggling lab's app: answers and records every request it is given.

A request counts as seen once the app has read its whole body: a server that
refuses a body while the app reads it (wizgy raises from wsgi.input.read) leaves no
record. Each record is one JSON line appended to $SMUGGLE_LOG (O_APPEND: one write
per line, so threads and worker processes do not interleave); the response carries
the same record, so the lab can tell which responses came from the app.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os

LOG = os.environ.get("SMUGGLE_LOG")
counter = itertools.count(1)


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    record = {
        "n": next(counter),
        "pid": os.getpid(),
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest()[:12],
    }
    line = json.dumps(record).encode() + b"\n"
    if LOG:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(line)))],
    )
    return [line]
