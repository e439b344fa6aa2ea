"""What an app costs alone: the most requests per CPU-second any server could serve it.

    loadtest/bench/.venv/bin/python loadtest/bench/appfloor.py flaskapp:app --path /hello
    .venv-pypy/bin/python loadtest/bench/appfloor.py djangoapp:app --path /hello --warmup 10
    python3 loadtest/bench/appfloor.py hello:app --calls 1000 --rounds 1 --warmup 0

(apps are found in apps/ and in this folder; framework apps need an interpreter that
has them: the bench venv on CPython, .venv-pypy on PyPy)

No server, no socket, no HTTP: one environ is built once from the request wrk sends
(`GET PATH HTTP/1.1` with a Host field), by wizgy's own parser and build_environ, so
it holds what wizgy hands an app. Then a plain loop does the least any WSGI server
must do per request: copy that environ (dict(environ)), give the copy a fresh
wsgi.input, call app(environ, start_response), iterate the body and call its close().
start_response only keeps the status and headers.

A warm-up comes first (--warmup CPU-seconds: PyPy's JIT needs them; the whole warm-up
is spent even on CPython, where it costs only time), then --rounds rounds of --calls
calls each, timed with time.process_time() (this process's CPU, so other work on a
shared machine moves it far less than wall time). Prints the best and the median
round as calls per CPU-second and microseconds per call, and how many calls were made
and body bytes read, so a reader can check the app really answered every call.

A server's full cost per request is the app's plus its own: if this number is below a
target (say, 2x the req/s bjoern serves the same app with on CPython), no server on
this interpreter can reach that target, however fast its own part.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "server"), os.path.join(ROOT, "apps"), HERE]

from wizgy.http import RequestParser  # noqa: E402
from wizgy.wsgi import ServerInfo, build_environ  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", default="hello:app",
                        help="MODULE:CALLABLE (default hello:app)")
    parser.add_argument("--path", default="/", help="request target (default /)")
    parser.add_argument("--calls", type=int, default=100_000, help="per round (default 100000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="CPU-seconds of calls before the rounds (default 5)")
    args = parser.parse_args()

    os.chdir(os.path.join(ROOT, "apps"))  # where the servers run the apps (--chdir apps)
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name or "application")
    environ = wrk_environ(args.path)
    status = call(app, environ, 1)[1]
    if not status.startswith("2"):
        raise SystemExit(f"{args.app} {args.path} answered {status!r}, not 2xx")

    warmup_calls = warm_up(app, environ, args.warmup)
    rates, calls, body_bytes = [], 0, 0
    for _ in range(args.rounds):
        started = time.process_time()
        body_bytes += call(app, environ, args.calls)[0]
        rates.append(args.calls / max(time.process_time() - started, 1e-9))
        calls += args.calls
    report(args, status, rates, calls, warmup_calls, body_bytes)


def wrk_environ(path: str) -> dict:
    """The environ wizgy builds for wrk's request (a connection from 127.0.0.1)."""
    parser = RequestParser()
    parser.receive(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n" % path.encode("latin-1"))
    request = parser.next_event()
    info = ServerInfo(server_name="127.0.0.1", server_port="8000", remote_addr="127.0.0.1",
                      remote_port="40000", url_scheme="http", root_path="",
                      multithread=False, multiprocess=True, errors=sys.stderr,
                      trust_proxy=False)
    return build_environ(request, io.BytesIO(b""), info)


def call(app, environ: dict, n: int) -> tuple[int, str]:
    """Serve n requests without a server; return the body bytes read and the last
    status the app gave."""
    started = []

    def start_response(status, headers, exc_info=None):
        started[:] = status, headers
        return started.append  # write(): PEP 3333 asks for one; these apps never call it

    size = 0
    for _ in range(n):
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(b"")
        result = app(env, start_response)
        try:
            for chunk in result:
                size += len(chunk)
        finally:
            if hasattr(result, "close"):
                result.close()
    return size, started[0]


def warm_up(app, environ: dict, seconds: float) -> int:
    calls = 0
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        call(app, environ, 1000)
        calls += 1000
    return calls


def report(args, status: str, rates: list[float], calls: int, warmup_calls: int,
           body_bytes: int) -> None:
    best, median = max(rates), statistics.median(rates)
    runtime = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"{args.app} {args.path} alone on {runtime}: {best:,.0f} calls per CPU-second "
          f"= {1e6 / best:.2f} us per call (best of {args.rounds} rounds of {args.calls}; "
          f"median {median:,.0f} = {1e6 / median:.2f} us)")
    print(f"calls {calls} after {warmup_calls} warm-up calls; status {status}; "
          f"body bytes {body_bytes} in the timed calls")


if __name__ == "__main__":
    main()
