#!/usr/bin/env python3
"""The lesson client: many forked clients, each holding many connections.

A fresh take on the tutorial's client3.py, whose clients exit after their first
connection. Here each of --max-clients forked processes opens --max-conns
connections at once, sends one GET on each and watches what comes back:

  2xx        a complete 2xx response (and EOF, when `Connection: close` was sent)
  503        a complete 503: the server could not serve it (no-reap: fork failed)
  other      a complete response with another status
  no EOF     a complete response, then no EOF within --wait (keep-duplicate-fds)
  timeout    nothing complete within --wait: no response, or a connect that never
             finished (a full backlog, a server out of descriptors)
  reset      the server reset or closed the connection before a complete response
  refused    the connect was refused (nothing listening, or a full queue)
  failed     a client-side problem (e.g. EMFILE here) or a malformed response

--hold keeps every connection open that long after it started, whatever came
back, so the server sees many connections at once (descriptor exhaustion).
--timeout bounds the whole run: the parent kills its clients at the deadline
and counts what they did not report as hung.

Then it says what the lesson predicts beside what it saw, one line each:

    expected: only 2xx - saw 0 others
    expected: zombies > 0 - saw 61

The lesson is --lesson, else the one the server's --status URL reports (wizgy's
status listener, which also gives the zombies to count); without either, the
prediction is a server without a bug: every connection 2xx (and no zombies).

Exit status: 0 when what happened is what the lesson predicts (a lesson's failure
is a success here), 1 when it is not (the server, the network or this client
failed otherwise: the lines say which), 2 for bad arguments. Standard library only.

    python3 lesson_client.py --port 8000 --max-clients 128
    python3 lesson_client.py --max-clients 128 --status http://127.0.0.1:9000/status
    python3 lesson_client.py --max-clients 300 --hold 30 --timeout 60
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

OUTCOMES = ("2xx", "503", "other", "no_eof", "timeout", "reset", "refused", "failed")
LABELS = {"no_eof": "no EOF"}
REPORT_MARGIN = 0.3  # seconds a client keeps to report before the parent's deadline
SETTLE = 3.0  # seconds the server gets after the run to reap (or not) its children


class MalformedResponse(Exception):
    pass


# -- reading a response (just enough HTTP/1.1 to know when it is complete) --


def parse_head(buf: bytes) -> tuple[int, dict[bytes, bytes], int] | None:
    """Status, lower-cased headers and body offset; None until the head is in."""
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end < 0:
            return None
        status_line, *lines = buf[start:end].split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/") or not rest[:3].isdigit():
            raise MalformedResponse(status_line[:80])
        status = int(rest[:3])
        if 100 <= status < 200:  # interim response: the real one follows
            start = end + 4
            continue
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, end + 4


def chunked_complete(body: bytes) -> bool:
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        try:
            size = int(body[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise MalformedResponse("bad chunk size") from None
        if size == 0:  # last chunk, then trailers and an empty line
            return body.find(b"\r\n\r\n", eol) >= 0
        pos = eol + 2 + size + 2
        if pos > len(body):
            return False


def body_complete(status: int, headers: dict[bytes, bytes], body: bytes) -> bool | None:
    """True/False once framing is known; None when only EOF ends the body."""
    if status in (204, 304):
        return True
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return chunked_complete(body)
    if b"content-length" in headers:
        try:
            return len(body) >= int(headers[b"content-length"])
        except ValueError:
            raise MalformedResponse("bad Content-Length") from None
    return None


# -- one client process: its connections, driven by a selector --


@dataclass
class Connection:
    started: float
    sock: socket.socket | None = None
    unsent: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    head: tuple[int, dict[bytes, bytes], int] | None = None
    status: int | None = None
    complete: bool = False
    outcome: str | None = None
    reason: str = ""


def errno_outcome(code: int) -> tuple[str, str]:
    name = errno.errorcode.get(code, str(code))
    if code == errno.ECONNREFUSED:
        return "refused", name
    if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return "reset", name
    if code == errno.ETIMEDOUT:
        return "timeout", name
    return "failed", name


def status_outcome(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    return "503" if status == 503 else "other"


class Client:
    def __init__(
        self, options: argparse.Namespace, address: tuple, family: int, report
    ):
        self.options = options
        self.address = address
        self.family = family
        self.report = report
        self.request = build_request(options)
        self.selector = selectors.DefaultSelector()
        self.connections: list[Connection] = []

    def run(self, deadline: float) -> None:
        for _ in range(self.options.max_conns):
            self.connections.append(self.open(time.monotonic()))
        while any(c.sock for c in self.connections):
            now = time.monotonic()
            if now >= deadline:
                break
            timeout = min([deadline, *self.timers()]) - now
            for key, _ in self.selector.select(max(timeout, 0)):
                self.on_ready(key.data)
            self.expire(time.monotonic())
        for conn in self.connections:
            self.finish(conn, "no_eof" if conn.complete else "timeout",
                        "still waiting at the global timeout")
            self.close(conn)

    def open(self, now: float) -> Connection:
        conn = Connection(started=now, unsent=self.request)
        try:
            conn.sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:
            self.finish(
                conn, "failed", f"client socket(): {errno.errorcode.get(exc.errno)}"
            )
            return conn
        conn.sock.setblocking(False)
        code = conn.sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            self.finish(conn, *errno_outcome(code))
        else:
            self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        return conn

    def timers(self) -> list[float]:
        return [t for c in self.connections if c.sock for t in self.deadlines(c)]

    def deadlines(self, conn: Connection) -> tuple[float, ...]:
        if conn.outcome is None:
            return (conn.started + self.options.wait,)
        return (conn.started + self.options.hold,)

    def expire(self, now: float) -> None:
        for conn in self.connections:
            if conn.sock is None:
                continue
            if conn.outcome is None and now >= conn.started + self.options.wait:
                self.finish(conn, "no_eof" if conn.complete else "timeout",
                            self.hung_reason(conn))
            if conn.outcome is not None and now >= conn.started + self.options.hold:
                self.close(conn)

    def hung_reason(self, conn: Connection) -> str:
        if conn.unsent:
            return "connect not finished"
        if conn.complete:
            return "no EOF after the response"
        return "no complete response"

    def on_ready(self, conn: Connection) -> None:
        try:
            if conn.unsent:
                self.send(conn)
            else:
                self.receive(conn)
        except MalformedResponse as exc:
            self.finish(conn, "failed", f"malformed response: {exc}")
        except OSError as exc:
            self.finish(conn, *errno_outcome(exc.errno or 0))

    def send(self, conn: Connection) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        sent = conn.sock.send(conn.unsent)
        conn.unsent = conn.unsent[sent:]
        if not conn.unsent:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def receive(self, conn: Connection) -> None:
        data = conn.sock.recv(65536)
        conn.received += data
        if conn.head is None:
            conn.head = parse_head(bytes(conn.received))
        if conn.head is not None:
            conn.status, headers, offset = conn.head
            complete = body_complete(conn.status, headers, conn.received[offset:])
            # A body without Content-Length or chunked framing ends at EOF.
            conn.complete = bool(complete) or (not data and complete is None)
        if conn.complete and (not data or self.options.keep_alive):
            self.finish(conn, status_outcome(conn.status), "")
        elif not data:
            reason = (
                "closed mid-response" if conn.received else "closed without a response"
            )
            self.finish(conn, "reset", reason)

    def finish(self, conn: Connection, outcome: str, reason: str) -> None:
        if conn.outcome is not None:
            return
        conn.outcome, conn.reason = outcome, reason
        if conn.sock is not None and conn.sock in self.selector.get_map():
            self.selector.unregister(conn.sock)
        self.report({"outcome": outcome, "reason": reason, "status": conn.status})
        if (
            conn.sock is not None
            and time.monotonic() >= conn.started + self.options.hold
        ):
            self.close(conn)

    @staticmethod
    def close(conn: Connection) -> None:
        if conn.sock is not None:
            conn.sock.close()
            conn.sock = None


def build_request(options: argparse.Namespace) -> bytes:
    host = f"[{options.host}]" if ":" in options.host else options.host
    connection = "keep-alive" if options.keep_alive else "close"
    return (
        f"GET {options.path} HTTP/1.1\r\nHost: {host}:{options.port}\r\n"
        f"User-Agent: wizgy-lesson-client\r\nConnection: {connection}\r\n\r\n"
    ).encode("latin-1")


# -- the parent: fork the clients, collect their reports, kill stragglers --


def fork_clients(options, address, family, deadline, pipe) -> list[int]:
    read_fd, write_fd = pipe
    pids = []
    for _ in range(options.max_clients):
        try:
            pid = os.fork()
        except OSError:
            break  # EAGAIN under a process limit: the missing clients count as failed
        if pid == 0:
            os.close(read_fd)
            run_child(options, address, family, deadline, write_fd)
        pids.append(pid)
    return pids


def run_child(options, address, family, deadline, write_fd) -> None:
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

        def report(result: dict) -> None:
            # One line per connection, well under PIPE_BUF: writes never interleave.
            os.write(write_fd, json.dumps(result).encode() + b"\n")

        Client(options, address, family, report).run(deadline - REPORT_MARGIN)
        status = 0
    except Exception:  # noqa: BLE001 -- the child must reach os._exit; say why it died
        traceback.print_exc()
    finally:
        os._exit(status)


def collect(read_fd: int, deadline: float) -> list[dict]:
    results, pending = [], b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        selector = selectors.DefaultSelector()
        selector.register(pipe, selectors.EVENT_READ)
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                data = pipe.read(65536)
                if not data:
                    break
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                results.extend(json.loads(line) for line in lines)
        except KeyboardInterrupt:
            pass  # report what the clients said so far
    return results


def stop_clients(pids: list[int]) -> None:
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def summarise(options, results: list[dict], forked: int, elapsed: float) -> dict:
    counts = collections.Counter(r["outcome"] for r in results)
    reasons = collections.Counter(r["reason"] for r in results if r["reason"])
    missing_forks = (options.max_clients - forked) * options.max_conns
    unreported = forked * options.max_conns - len(results)
    counts["failed"] += missing_forks
    counts["timeout"] += unreported
    if missing_forks:
        reasons["client fork failed"] += missing_forks
    if unreported:
        reasons["not reported before the global timeout"] += unreported
    statuses = collections.Counter(str(r["status"]) for r in results if r["status"])
    return {
        "target": f"{options.host}:{options.port}",
        "path": options.path,
        "clients": options.max_clients,
        "conns_per_client": options.max_conns,
        "wait": options.wait,
        "total": options.max_clients * options.max_conns,
        **{outcome: counts[outcome] for outcome in OUTCOMES},
        # the two sums earlier versions reported: a 2xx, and no complete exchange in time
        "succeeded": counts["2xx"],
        "hung": counts["no_eof"] + counts["timeout"],
        "statuses": dict(sorted(statuses.items())),
        "reasons": dict(reasons.most_common()),
        "elapsed": round(elapsed, 3),
    }


# -- what the lesson predicts, beside what happened --


@dataclass(frozen=True)
class Prediction:
    expected: str  # "zombies > 0"
    saw: Callable[[dict], int | None]  # the number seen (None: not seen, no --status)
    holds: Callable[[int], bool]
    unit: str = ""


def only(*allowed: str) -> Prediction:
    """Every connection ended one of these ways; the others are counted."""
    names = ", ".join(LABELS.get(outcome, outcome) for outcome in allowed)
    return Prediction(
        f"only {names}",
        lambda seen: sum(seen[o] for o in OUTCOMES if o not in allowed),
        lambda n: n == 0,
        " others",
    )


def zombies(seen: dict) -> int | None:
    return seen["server"]["zombies"] if seen["server"] else None


PREDICTIONS: dict[str | None, tuple[Prediction, ...]] = {
    None: (only("2xx"), Prediction("zombies = 0", zombies, lambda n: n == 0)),
    "reap-once": (only("2xx"), Prediction("zombies > 0", zombies, lambda n: n > 0)),
    # 503 once zombies fill `ulimit -u` and fork() fails
    "no-reap": (only("2xx", "503"), Prediction("zombies > 0", zombies, lambda n: n > 0)),
    "keep-duplicate-fds": (
        only("no_eof", "timeout"),  # timeouts once the parent is out of descriptors
        Prediction("no EOF > 0", lambda seen: seen["no_eof"], lambda n: n > 0),
    ),
}


def read_status(url: str) -> dict | None:
    """wizgy's /status report, or None if it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def settled_status(url: str, want_no_zombies: bool) -> dict | None:
    """/status once the server has reaped what it will: no zombies (if none are
    expected) or the same count twice in a row, within SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    last = read_status(url)
    while last is not None and time.monotonic() < deadline:
        if want_no_zombies and last["zombies"] == 0:
            break
        time.sleep(0.3)
        now = read_status(url)
        if now is None or (not want_no_zombies and now["zombies"] == last["zombies"]):
            return now or last
        last = now
    return last


def judge(lesson: str | None, seen: dict, status_asked: bool) -> list[dict]:
    """Each prediction of the lesson with what was seen and whether it holds
    (None: not seen, when no --status was given)."""
    verdicts = []
    for prediction in PREDICTIONS.get(lesson, ()):
        saw = prediction.saw(seen)
        holds = None if saw is None else prediction.holds(saw)
        if holds is None and status_asked:
            holds = False  # asked for, not read: the status listener failed
        verdicts.append({"expected": prediction.expected, "saw": saw, "unit": prediction.unit,
                         "holds": holds})
    return verdicts


def server_facts(before: dict | None, after: dict | None) -> dict | None:
    if not after:
        return None
    grew = {key: after[key] - (before or after)[key] for key in ("emfile_events", "fork_failures")}
    return {
        "lesson": after["lesson"],
        "model": after["model"],
        "zombies": after["zombies"],
        "open_fds": after["open_fds"],
        "nofile_limit": after["nofile_limit"],
        "nproc_limit": after["nproc_limit"],
        "emfile_events_during_run": grew["emfile_events"],
        "fork_failures_during_run": grew["fork_failures"],
    }


def print_report(summary: dict) -> None:
    lesson = summary["lesson"] or "none (a server without a bug)"
    print(
        f"{summary['target']} GET {summary['path']}: {summary['clients']} clients x "
        f"{summary['conns_per_client']} connections = {summary['total']}; lesson {lesson}"
    )
    for outcome in OUTCOMES:
        print(f"  {LABELS.get(outcome, outcome):<10} {summary[outcome]}")
    statuses = ", ".join(f"{s} x{n}" for s, n in summary["statuses"].items())
    print(f"  statuses   {statuses or '-'}")
    for reason, n in summary["reasons"].items():
        print(f"  {n:>6} {reason}")
    server = summary["server"]
    if server:
        print(f"server: model {server['model']}, zombies {server['zombies']}, open fds "
              f"{server['open_fds']} / {server['nofile_limit']}, ulimit -u "
              f"{server['nproc_limit']}, during the run: EMFILE "
              f"{server['emfile_events_during_run']}, fork failures "
              f"{server['fork_failures_during_run']}")
    for verdict in summary["predictions"]:
        if verdict["saw"] is not None:
            saw = f"saw {verdict['saw']}{verdict['unit']}"
        else:
            saw = "not seen (" + ("--status did not answer" if summary["status_url"]
                                  else "no --status") + ")"
        mark = "" if verdict["holds"] is not False else "   <- not as predicted"
        print(f"expected: {verdict['expected']} - {saw}{mark}")
    print(f"finished in {summary['elapsed']:.2f}s: "
          + ("as the lesson predicts" if summary["as_predicted"] else
             "NOT as the lesson predicts (the server or this kit failed another way)"))
    if not summary["as_predicted"] and summary["hung"]:
        print(f"  (a busy machine may need more than --wait {summary['wait']:g} s per connection)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Lesson client: forked clients holding many HTTP connections.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--path", default="/hello")
    parser.add_argument(
        "--max-clients", type=int, default=1, help="forked client processes"
    )
    parser.add_argument(
        "--max-conns", type=int, default=1, help="connections per client"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="keep each connection open this long (s)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=5.0,
        help="a connection without a full response by then hung",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="bound on the whole run (s)"
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="send Connection: keep-alive; expect no EOF",
    )
    parser.add_argument(
        "--status",
        metavar="URL",
        help="wizgy's /status (e.g. http://127.0.0.1:9000/status): the lesson, and the "
        "zombies to count",
    )
    parser.add_argument(
        "--lesson",
        choices=[name for name in PREDICTIONS if name] + ["none"],
        help="the lesson to expect (default: the one --status reports, else none)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    options = parser.parse_args(argv)
    if options.max_clients < 1 or options.max_conns < 1:
        parser.error("--max-clients and --max-conns must be at least 1")
    if options.timeout <= 0 or options.wait <= 0 or options.hold < 0:
        parser.error("--timeout and --wait must be positive, --hold not negative")
    if not options.path.startswith("/"):
        parser.error("--path must start with /")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        family, _, _, _, address = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        print(f"lesson_client: cannot resolve {options.host}: {exc}", file=sys.stderr)
        return 2
    before = read_status(options.status) if options.status else None
    lesson = options.lesson or (before or {}).get("lesson")
    lesson = None if lesson == "none" else lesson
    started = time.monotonic()
    deadline = started + options.timeout
    read_fd, write_fd = os.pipe()
    pids = fork_clients(options, address, family, deadline, (read_fd, write_fd))
    os.close(write_fd)
    try:
        results = collect(read_fd, deadline)
    finally:
        stop_clients(pids)
    summary = summarise(options, results, len(pids), time.monotonic() - started)
    after = settled_status(options.status, lesson is None) if options.status else None
    summary["lesson"] = lesson
    summary["status_url"] = options.status
    summary["server"] = server_facts(before, after)
    summary["predictions"] = judge(lesson, summary, bool(options.status))
    summary["as_predicted"] = all(v["holds"] is not False for v in summary["predictions"])
    try:
        if options.json:
            print(json.dumps(summary, indent=2))
        else:
            print_report(summary)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into `head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if summary["as_predicted"] else 1


if __name__ == "__main__":
    sys.exit(main())
