"""The scenarios: what wrk asks of every server. Names are the harness's interface."""

from __future__ import annotations

import os
from dataclasses import dataclass

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(os.path.dirname(os.path.dirname(BENCH_DIR)), "apps")


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    app: str = "hello:app"
    appdir: str = BENCH_DIR
    path: str = "/"
    connections: int = 64
    headers: tuple[str, ...] = ()
    body_bytes: int = 0  # > 0: every request is a POST of this many bytes
    idle: int = 0  # idle keep-alive connections held open beside the active ones
    workers: int = 1
    pinned: bool = True  # server on CPU 0, wrk on CPU 1; else both float


SCENARIOS = [
    Scenario("hello", "hello world, 64 keep-alive connections"),
    Scenario(
        "hello-close",
        "hello world, Connection: close on every request",
        headers=("Connection: close",),
    ),
    Scenario("c1", "hello world, one connection (latency)", connections=1),
    Scenario("flask-hello", "Flask /hello", app="flaskapp:app", appdir=APPS_DIR, path="/hello"),
    Scenario(
        "pyramid-hello", "Pyramid /hello", app="pyramidapp:app", appdir=APPS_DIR, path="/hello"
    ),
    Scenario("django-hello", "Django /hello", app="djangoapp:app", appdir=APPS_DIR, path="/hello"),
    Scenario("stream-64k", "64 KiB streamed in 16 chunks, no Content-Length", path="/stream64k"),
    Scenario(
        "post-1m",
        "1 MiB POST to /echo, 16 connections",
        path="/echo",
        connections=16,
        body_bytes=1 << 20,
    ),
    Scenario("idle-1000", "hello world, 64 active + 1,000 idle keep-alive connections", idle=1000),
    Scenario(
        "scale-2w", "hello world, 2 workers on 2 cores, wrk unpinned", workers=2, pinned=False
    ),
]

BY_NAME = {s.name: s for s in SCENARIOS}
QUICK = ["hello"]
