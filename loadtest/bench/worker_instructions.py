"""The whole worker's CPU instructions per request: loop, accept, read, serve, close.

    python3 loadtest/bench/worker_instructions.py                    # keep-alive and close
    python3 loadtest/bench/worker_instructions.py --mode close --requests 4000
    python3 loadtest/bench/worker_instructions.py --server-dir /elsewhere/server  # another tree

inprocess.py --instructions starts at handle_request(): it cannot see the selector
loop, accept(), the read, parking or closing, which are most of what a new connection
costs. This runs the real server, `wizgy -k evloop -w 1 hello:app`, under valgrind
(cachegrind, children traced, so the forked worker has its own count), sends it
requests over TCP and reads the worker's total. It does so twice, once with no
measured requests and once with --requests, after the same warm-up; the difference
over --requests is one request.

The two loads:
  keep   one connection, one request after the other (keep-alive).
  close  a new connection for each request (Connection: close). A worker that wakes
         for each connection as it comes would count wakeups that depend on timing
         (an accept() that finds nothing, a read before the request is in), so the
         worker is stopped (SIGSTOP) while a batch of BATCH connections connect and
         send, then continued: each request costs one accept, one read, one response
         and one close, the same on every run.

Two runs of the same tree agree within about 0.5%; compare trees with the same
interpreter. Needs valgrind (Debian: apt-get install valgrind) and Linux /proc.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WARMUP = 200  # Connection: close requests before counting starts, in both runs
BATCH = 50  # close mode: connections made while the worker is stopped
CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
KEEP = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("keep", "close", "both"), default="both")
    parser.add_argument("--requests", type=int, default=2000,
                        help="measured requests per run (default 2000; close: a multiple of 50)")
    parser.add_argument("--server-dir", default=os.path.join(ROOT, "server"),
                        help="the wizgy tree to count (default this repository's server/)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run it")
    parser.add_argument("--warmup", type=int, default=WARMUP,
                        help=f"requests before counting starts, in the measured mode (default "
                             f"{WARMUP}; PyPy's JIT needs thousands: e.g. 20000 for keep, "
                             f"5000 for close)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.requests <= 0 or args.requests % BATCH:
        raise SystemExit(f"--requests must be a positive multiple of {BATCH}")
    for mode in ("keep", "close") if args.mode == "both" else (args.mode,):
        base = worker_instructions(args, mode, 0)
        total = worker_instructions(args, mode, args.requests)
        print(f"{mode}: {(total - base) / args.requests:,.0f} instructions per request "
              f"(whole worker, valgrind, {args.requests} requests)", flush=True)


def worker_instructions(args, mode: str, requests: int) -> int:
    """Start the server under cachegrind, warm it up, send `requests`, stop it: the
    worker's instruction count."""
    with tempfile.TemporaryDirectory(prefix="wizgy-instr-") as out:
        port = free_port()
        server_dir = os.path.abspath(args.server_dir)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([server_dir, HERE]))
        # PyPy writes machine code as it runs (its JIT): valgrind must watch for that
        jit = ["--smc-check=all-non-file"] if "pypy" in os.path.basename(
            os.path.realpath(args.python)) else []
        cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes", *jit,
               f"--cachegrind-out-file={out}/ir.%p", args.python, "-m", "wizgy",
               "-k", "evloop", "-w", "1", "-b", f"127.0.0.1:{port}", "hello:app"]
        log = open(os.path.join(out, "server.log"), "w+")
        master = subprocess.Popen(cmd, env=env, cwd=HERE, stdout=log, stderr=log,
                                  start_new_session=True)
        try:
            wait_for_port(port, master, log)
            for _ in range(WARMUP):
                close_request(port)
            worker = only_child(master.pid)
            for n in (args.warmup - WARMUP, requests):  # the rest of the warm-up, then the count
                if mode == "keep":
                    keep_alive_requests(port, n)
                else:
                    for _ in range(-(-n // BATCH)):
                        batch(port, worker)
        finally:
            stop(master)
            log.close()
        return summary(os.path.join(out, f"ir.{worker}"))


def keep_alive_requests(port: int, n: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for _ in range(n):
            sock.sendall(KEEP)
            got = b""
            while not got.endswith(b"Hello, World!"):  # hello.py's whole body
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("the server closed a keep-alive connection")
                got += data


def close_request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(CLOSE)
        read_to_end(sock)


def batch(port: int, worker: int) -> None:
    """BATCH connections, each with its request sent, made while the worker is stopped."""
    os.kill(worker, signal.SIGSTOP)
    try:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=60)
                 for _ in range(BATCH)]
        for sock in socks:
            sock.sendall(CLOSE)
        time.sleep(0.05)  # the last bytes are in the worker's socket buffers
    finally:
        os.kill(worker, signal.SIGCONT)
    for sock in socks:
        with sock:
            read_to_end(sock)


def read_to_end(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def only_child(pid: int) -> int:
    """The master's one worker (by the parent pid in /proc/*/stat)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    if len(children) != 1:
        raise SystemExit(f"expected one worker under pid {pid}, found {children}")
    return children[0]


def summary(path: str) -> int:
    with open(path) as counts:
        found = re.search(r"^summary:\s+(\d+)", counts.read(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction summary in {path}")
    return int(found.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(master: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the worker too), SIGKILL if it lingers."""
    try:
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(120)
    except ProcessLookupError:
        pass  # it has gone already
    except subprocess.TimeoutExpired:
        os.killpg(master.pid, signal.SIGKILL)
    master.wait()


def wait_for_port(port: int, master: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 120  # valgrind starts slowly
    while time.monotonic() < deadline:
        if master.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited with {master.returncode} before "
                             f"listening:\n{log.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not listen within 120 s")


if __name__ == "__main__":
    main()
