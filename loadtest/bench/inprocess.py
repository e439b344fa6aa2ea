"""Where one request's microseconds go inside wizgy, without wrk or the kernel's TCP.

    python3 loadtest/bench/inprocess.py                          # hello:app, GET /
    loadtest/bench/.venv/bin/python loadtest/bench/inprocess.py --app flaskapp:app --path /hello
    python3 loadtest/bench/inprocess.py --profile                # cProfile, top 25
    python3 loadtest/bench/inprocess.py --instructions           # CPU instructions (valgrind)

(framework apps need an interpreter that has them: the bench venv, after a `make bench`)

One ParkedConnection (as evloop holds it) over a Unix socketpair: each request's
bytes are handed to its parser (as the evloop model's read_parked() does after its
read) and served with handle_request(); the response is sent for real and read off
the other end in batches. Prints the best of 7 runs in us per request: the server's
Python plus one send(). Machine noise is large here (a VM): compare runs made
minutes apart, not hours. The wrk harness (run.py) remains what the speed claims
rest on. The loop's own part (epoll, the read, parking) is not in this count.

--instructions counts what timing cannot see through that noise: the CPU
instructions one request costs, the same on every run. It runs this script twice
under valgrind (Debian package `valgrind`), once serving 0 requests and once
serving --requests (default 3000 here), and divides the difference. Use it to decide
whether a change to the hot path pays: a C-level trick can execute fewer bytecodes
and more instructions (zip/map/compress over a dozen header fields did, by 20-50%).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import re
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "server"), os.path.join(ROOT, "apps"), HERE]

from wizgy import config  # noqa: E402
from wizgy.connection import ServerContext  # noqa: E402
from wizgy.parked import ParkedConnection  # noqa: E402
from wizgy.log import Logs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="hello:app", help="MODULE:CALLABLE (default hello:app)")
    parser.add_argument("--path", default="/", help="request target (default /)")
    parser.add_argument("--requests", type=int, default=20000, help="per run (default 20000)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile")
    parser.add_argument("--instructions", action="store_true",
                        help="count CPU instructions per request under valgrind instead")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # valgrind's run
    args = parser.parse_args()
    if args.instructions:
        count_instructions(args)
        return

    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name or "application")
    settings = config.parse([args.app])
    ctx = ServerContext(app, settings, Logs(None, None, "warning"),
                        multithread=False, multiprocess=True)
    server_end, client_end = socket.socketpair()
    client_end.setblocking(False)
    conn = ParkedConnection(server_end, None, ctx)
    conn.set_nonblocking()
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n" % args.path.encode()

    def run(n: int) -> None:
        parser = conn.parser
        for i in range(n):
            parser.receive(request)
            if not (parser.head_complete() and conn.handle_request()):
                raise SystemExit(f"request {i} was not served with keep-alive")
            if i % 32 == 31:  # read the responses off before the socket buffer fills
                try:
                    while client_end.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass

    run(1000)
    if args.once:  # under valgrind: warmed up, now exactly --requests more
        run(args.requests)
        return
    best = min(timed(run, args.requests) for _ in range(7))
    print(f"{args.app} {args.path}: {best / args.requests * 1e6:.2f} us per request "
          f"(best of 7 runs of {args.requests})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.requests)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def count_instructions(args) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    requests = args.requests if "--requests" in sys.argv else 3000

    def instructions(n: int) -> int:
        cmd = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, os.path.abspath(__file__), "--once", "--app", args.app,
               "--path", args.path, "--requests", str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr}")
        return int(found.group(1).replace(",", ""))

    per_request = (instructions(requests) - instructions(0)) / requests
    print(f"{args.app} {args.path}: {per_request:,.0f} instructions per request "
          f"(valgrind, {requests} requests)")


def timed(run, n: int) -> float:
    started = time.perf_counter()
    run(n)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
