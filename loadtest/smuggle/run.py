#!/usr/bin/env python3
"""The smuggling lab: wizgy's rejection corpus, over real sockets, to wizgy and its peers.

    python3 loadtest/smuggle/run.py [--servers wizgy,gunicorn,waitress] [--only NAME,...]
                                    [--timeout S] [--out DIR]

Every file in server/tests/corpus/invalid (loaded by server/tests/corpus_loader.py) is
a request wizgy must refuse. For each server, for each file: open a connection, send
the file's bytes and, in the same write, a benign second request
(`GET /__second?rule=NAME`), then read until the server closes, answers twice, or
`--timeout` seconds pass. The app (echo_app.py) appends a line to a log for every
request it reads to the end, so each rule gets three observations per server:

  - status: the first response's status (`-` when none came);
  - closed: whether the server closed the connection after answering (`open` also
    when it went on to answer the second request, or sat waiting);
  - app: what the app was handed: nothing, one request, or two or more (`SMUGGLED`:
    the server went on reading the connection after a request it should have
    refused, so a proxy in front and this server disagree about where requests end).

A file's `# limits:` line is applied through each server's own flags where it has
one; where it has none the server runs with its defaults, and the report says so.
Servers start on 127.0.0.1 port 0 in their own process group and are stopped by
group. Peers come from the bench venv (loadtest/bench/bench_venv.py builds it when
missing); one that cannot be installed or started is reported, not dropped.

Writes results.md and results.json beside this file (or in --out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVER_DIR = ROOT / "server"
sys.path[:0] = [
    str(SERVER_DIR),
    str(SERVER_DIR / "tests"),
    str(ROOT / "loadtest" / "bench"),
]

from corpus_loader import Case, corpus
from wizgy.http import Limits

BENCH_VENV = ROOT / "loadtest" / "bench" / ".venv"
LISTENING = re.compile(r"(?:Listening at:|Serving on) http://127\.0\.0\.1:(\d+)")
SECOND = b"GET /__second?rule=%s HTTP/1.1\r\nHost: lab\r\n\r\n"
DEFAULT_LIMITS = Limits()


# --- the servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    package: str  # what the bench venv must have installed ("" = this interpreter)
    command: tuple[str, ...]  # {python} {bench_bin} filled in; the bind is 127.0.0.1:0
    limit_flags: dict[str, str]  # Limits field -> this server's flag
    note: str = ""

    def argv(self, limits: Limits, python: str) -> list[str]:
        words = [
            w.format(python=python, bench_bin=BENCH_VENV / "bin") for w in self.command
        ]
        flags = [
            f"{self.limit_flags[name]}={value}"
            for name, value in changed_limits(limits).items()
            if name in self.limit_flags
        ]
        return words[:-1] + flags + words[-1:]  # before the app: waitress uses getopt

    def unapplied(self, limits: Limits) -> list[str]:
        return [name for name in changed_limits(limits) if name not in self.limit_flags]


SERVERS = {
    "wizgy": ServerSpec(
        "wizgy",
        "",
        (
            "{python}",
            "-m",
            "wizgy",
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
            "--keep-alive",
            "5",
            "echo_app:app",
        ),
        {
            "request_line": "--limit-request-line",
            "fields": "--limit-request-fields",
            "field_size": "--limit-request-field-size",
            "max_body": "--max-body",
            "head": "--limit-request-head",
        },
        note="default model (prefork master + one evloop worker)",
    ),
    "gunicorn": ServerSpec(
        "gunicorn",
        "gunicorn",
        (
            "{bench_bin}/gunicorn",
            "-b",
            "127.0.0.1:0",
            "-k",
            "sync",
            "-w",
            "1",
            "--no-control-socket",
            "echo_app:app",
        ),
        {
            "request_line": "--limit-request-line",
            "fields": "--limit-request-fields",
            "field_size": "--limit-request-field_size",
        },
        note="sync worker: answers one request per connection, then closes, so a "
        "second request on the connection is never read",
    ),
    "gunicorn-gthread": ServerSpec(
        "gunicorn-gthread",
        "gunicorn",
        (
            "{bench_bin}/gunicorn",
            "-b",
            "127.0.0.1:0",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-w",
            "1",
            "--no-control-socket",
            "echo_app:app",
        ),
        {
            "request_line": "--limit-request-line",
            "fields": "--limit-request-fields",
            "field_size": "--limit-request-field_size",
        },
        note="gthread worker: keeps connections alive (not run by default)",
    ),
    "waitress": ServerSpec(
        "waitress",
        "waitress",
        (
            "{bench_bin}/waitress-serve",
            "--listen=127.0.0.1:0",
            "--threads=4",
            "echo_app:app",
        ),
        {"max_body": "--max-request-body-size", "head": "--max-request-header-size"},
        note="has no per-line, per-field or field-count limit (only a total header size)",
    ),
    "webserver2": ServerSpec(
        "webserver2",
        "",
        ("{python}", str(ROOT / "server" / "labs" / "part2" / "webserver2.py"),
         "-b", "127.0.0.1:0", "echo_app:app"),  # fmt: skip
        {},
        note="the labs' part 2 server (server/labs/part2): one request per connection, "
        "no checks (not run by default)",
    ),
}
DEFAULT_SERVERS = ["wizgy", "gunicorn", "waitress"]


def changed_limits(limits: Limits) -> dict[str, int]:
    return {
        f.name: getattr(limits, f.name)
        for f in dataclasses.fields(Limits)
        if getattr(limits, f.name) != getattr(DEFAULT_LIMITS, f.name)
    }


def availability(names: list[str], log=print) -> dict[str, str | None]:
    """{server: None if runnable, else why not}; builds the bench venv if peers need it."""
    wanted = {SERVERS[n].package for n in names} - {""}
    if not wanted:
        return dict.fromkeys(names)
    record: dict = {}
    missing = [
        p
        for p in wanted
        if not (BENCH_VENV / "bin" / p).exists()
        and not (BENCH_VENV / "bin" / f"{p}-serve").exists()
    ]
    if missing:
        try:
            import bench_venv

            record = bench_venv.ensure(log)
        except (OSError, subprocess.SubprocessError) as error:  # reported, not fatal
            record = {
                p: {"ok": False, "reason": f"bench venv: {error}"} for p in wanted
            }
    out = {}
    for name in names:
        package = SERVERS[name].package
        if not package:
            out[name] = None
        elif package in record and not record[package].get("ok"):
            out[name] = f"not installed: {record[package].get('reason')}"
        elif not any(
            (BENCH_VENV / "bin" / exe).exists() for exe in (package, f"{package}-serve")
        ):
            out[name] = f"not installed in {BENCH_VENV}"
        else:
            out[name] = None
    return out


class Running:
    """One server process on port 0, its own process group, its app's request log."""

    def __init__(
        self, spec: ServerSpec, limits: Limits, python: str, tmp: Path
    ) -> None:
        self.spec = spec
        tag = (
            "-".join(f"{k}{v}" for k, v in changed_limits(limits).items()) or "default"
        )
        self.app_log = tmp / f"{spec.name}-{tag}.requests"
        self.out_path = tmp / f"{spec.name}-{tag}.out"
        self.app_log.touch()
        env = {
            **os.environ,
            "SMUGGLE_LOG": str(self.app_log),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(SERVER_DIR), str(HERE)]),
        }
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                spec.argv(limits, python),
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.port = self._wait_listening()
        self._offset = 0

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def _wait_listening(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTENING.search(self.output())
            if m:
                time.sleep(0.3)  # let a master's worker boot
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.spec.name} did not start:\n{self.output()[-2000:]}")

    def seen_since_last(self) -> list[dict]:
        """The app's records written since the previous call."""
        with open(self.app_log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines()]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# --- one probe ------------------------------------------------------------------------


@dataclass
class Probe:
    statuses: list[int] = field(default_factory=list)  # final responses, in order
    closed: bool = False  # we saw EOF or a reset
    reset: bool = False
    timed_out: bool = False


def probe(port: int, data: bytes, timeout: float) -> Probe:
    """Send data in one write; read until the server closes, answers twice, or timeout."""
    result = Probe()
    deadline = time.monotonic() + timeout
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # a server may close before reading it all
            sock.sendall(data)
        while len(result.statuses) < 2:
            buf = take_responses(buf, result.statuses, eof=False)
            if len(result.statuses) >= 2:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                result.timed_out = True
                break
            except ConnectionResetError:
                result.closed = result.reset = True
                break
            if not chunk:
                result.closed = True
                take_responses(buf, result.statuses, eof=True)
                break
            buf += chunk
    return result


STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})")


def take_responses(buf: bytes, statuses: list[int], eof: bool) -> bytes:
    """Append the status of every complete response in buf; return what is left."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return buf
        head = buf[:end].decode("latin-1")
        m = STATUS_LINE.match(buf)
        status = int(m.group(1)) if m else 0
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        rest = buf[end + 4 :]
        if 100 <= status < 200:  # 100 Continue: not the answer
            buf = rest
            continue
        if "content-length" in headers and headers["content-length"].isdigit():
            length = int(headers["content-length"])
            if len(rest) < length:
                return buf
            statuses.append(status)
            buf = rest[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body_end = rest.find(b"\r\n0\r\n\r\n")
            if rest.startswith(b"0\r\n\r\n"):
                body_end, skip = 0, 5
            else:
                skip = 7
            if body_end < 0:
                return buf
            statuses.append(status)
            buf = rest[body_end + skip :]
        elif status in (204, 304):
            statuses.append(status)
            buf = rest
        else:  # delimited by close
            if not eof:
                return buf
            statuses.append(status)
            return b""


# --- the lab --------------------------------------------------------------------------


def observe(running: Running, case: Case, timeout: float) -> dict:
    running.seen_since_last()  # anything left from an earlier rule is not this one's
    second = SECOND % case.name.encode()
    result = probe(running.port, case.data + second, timeout)
    if result.timed_out:
        time.sleep(0.1)  # let the server notice our close and the app log what it read
    seen = running.seen_since_last()
    benign = f"rule={case.name}"
    return {
        "status": result.statuses[0] if result.statuses else None,
        "responses": result.statuses,
        "closed": result.closed and len(result.statuses) < 2,
        "reset": result.reset,
        "timed_out": result.timed_out,
        "app_saw": [
            f"{r['method']} {r['path']}"
            + (f" ({r['body_len']} B)" if r["body_len"] else "")
            for r in seen
        ],
        # requests the client never sent as such: neither the first nor the benign one
        "hidden": sum(1 for r in seen[1:] if r["query"] != benign),
    }


def run_server(
    name: str, cases: list[Case], timeout: float, python: str, tmp: Path
) -> dict:
    """Every case against one server: one process per distinct set of limits."""
    spec = SERVERS[name]
    results: dict[str, dict] = {}
    by_limits: dict[Limits, list[Case]] = {}
    for case in cases:
        by_limits.setdefault(case.limits, []).append(case)
    for limits, group in by_limits.items():
        try:
            running = Running(spec, limits, python, tmp)
        except RuntimeError as error:
            for case in group:
                results[case.name] = {"error": " ".join(str(error).split())[-300:]}
            continue
        try:
            for case in group:
                try:
                    results[case.name] = observe(running, case, timeout)
                except OSError as error:
                    results[case.name] = {"error": f"{type(error).__name__}: {error}"}
                results[case.name]["limits_not_applied"] = spec.unapplied(limits)
        finally:
            running.stop()
    return results


def run_lab(
    names: list[str],
    cases: list[Case],
    timeout: float = 2.0,
    python: str = sys.executable,
    log=print,
) -> dict:
    unavailable = availability(names, log)
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "servers": {
            n: {
                "note": SERVERS[n].note,
                "unavailable": unavailable[n],
                "version": version_of(n, python),
            }
            for n in names
        },
        "rules": [
            {
                "rule": c.name,
                "expected": c.expect_status,
                "limits": changed_limits(c.limits),
            }
            for c in cases
        ],
        "results": {},
    }
    runnable = [n for n in names if unavailable[n] is None]
    with (
        tempfile.TemporaryDirectory(prefix="smuggle-lab-") as tmp,
        concurrent.futures.ThreadPoolExecutor(max(1, len(runnable))) as pool,
    ):
        futures = {
            n: pool.submit(run_server, n, cases, timeout, python, Path(tmp))
            for n in runnable
        }
        for name, future in futures.items():
            report["results"][name] = future.result()
    return report


def version_of(name: str, python: str) -> str:
    package = SERVERS[name].package
    if not package:
        import wizgy

        return wizgy.__version__
    exe = BENCH_VENV / "bin" / "python"
    try:
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        done = subprocess.run(
            [str(exe), "-c", code],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout.strip() or "?"
    except OSError:
        return "?"


# --- verdicts and reports ---------------------------------------------------------------


def verdict(result: dict) -> str:
    """One word per cell: refused, refused-open, accepted, kept-reading, smuggled,
    no-answer, error."""
    if "error" in result:
        return "error"
    if result["hidden"]:
        return "smuggled"
    if len(result["app_saw"]) >= 2:
        return "kept-reading"
    if result["app_saw"]:
        return "accepted"
    if result["status"] is None:
        return "no-answer"
    return "refused" if result["closed"] else "refused-open"


def app_word(result: dict) -> str:
    n = len(result["app_saw"])
    if result["hidden"]:
        return f"{n} requests, SMUGGLED"
    return {0: "nothing", 1: "1 request"}.get(n, f"{n} requests")


def cell(result: dict | None) -> str:
    if result is None:
        return "n/a"
    if "error" in result:
        return "error"
    status = "-" if result["status"] is None else str(result["status"])
    closed = (
        "closed"
        if result["closed"]
        else ("open (timeout)" if result["timed_out"] else "open")
    )
    return f"{status} {closed}, app: {app_word(result)}"


def summary(report: dict, name: str) -> dict:
    results = report["results"].get(name, {})
    expected = {r["rule"]: r["expected"] for r in report["rules"]}
    counts = {
        "rules": len(results),
        "expected_status": 0,
        "closed": 0,
        "app_saw_bad": 0,
        "kept_reading": 0,
        "smuggled": 0,
    }
    for rule, r in results.items():
        if "error" in r:
            continue
        counts["expected_status"] += r["status"] == expected[rule]
        counts["closed"] += r["closed"]
        counts["app_saw_bad"] += bool(r["app_saw"])
        counts["kept_reading"] += len(r["app_saw"]) >= 2
        counts["smuggled"] += r["hidden"] > 0
    return counts


def markdown(report: dict) -> str:
    names = list(report["servers"])
    out = [
        "# Smuggling lab results",
        "",
        (
            f"Run {report['date']} with `python3 loadtest/smuggle/run.py "
            f"--servers {','.join(names)}`. Each rule is one file of "
            "`server/tests/corpus/invalid`, sent with a benign `GET /__second` behind it on "
            "the same connection. A cell is: first status, whether the server then closed "
            "the connection, and what the app was handed: `nothing`, `1 request` (the bad "
            "request reached the app), `2 requests` (it did, and the server kept reading the "
            "connection after it: on a framing rule, CL/TE/chunked, that is the desync "
            "request smuggling needs, since a proxy in front may have framed it differently), "
            "`SMUGGLED` (the app got a request the client never sent as one)."
        ),
        "",
        "| server | version | notes |",
        "|---|---|---|",
    ]
    for name, info in report["servers"].items():
        note = info["unavailable"] or info["note"]
        out.append(f"| {name} | {info['version']} | {note} |")
    out += [
        "",
        (
            "| server | expected status | closed | app handed the bad request "
            "| kept reading after it | hidden request reached the app |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        if report["servers"][name]["unavailable"]:
            continue
        s = summary(report, name)
        n = s["rules"]
        out.append(
            f"| {name} | {s['expected_status']}/{n} | {s['closed']}/{n} | {s['app_saw_bad']} "
            f"| {s['kept_reading']} | {s['smuggled']} |"
        )
    out += [
        "",
        "| rule | expected | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for rule in report["rules"]:
        name = rule["rule"]
        cells = []
        for server in names:
            r = report["results"].get(server, {}).get(name)
            text = cell(r)
            if (
                r
                and "error" not in r
                and (r["status"] != rule["expected"] or r["app_saw"] or not r["closed"])
            ):
                text = f"**{text}**"
            if r and r.get("limits_not_applied"):
                text += " (limit not settable: defaults)"
            cells.append(text)
        limits = " ".join(f"{k}={v}" for k, v in rule["limits"].items())
        label = f"`{name}`" + (f" ({limits})" if limits else "")
        out.append(f"| {label} | {rule['expected']} | " + " | ".join(cells) + " |")
    out += [
        "",
        (
            "Bold: differs from wizgy's rule (another status, connection left open, or "
            "the app was handed the request). Reproduce: `make smuggle`."
        ),
    ]
    return "\n".join(out) + "\n"


def print_table(report: dict) -> None:
    names = [n for n in report["servers"] if not report["servers"][n]["unavailable"]]
    for name, info in report["servers"].items():
        if info["unavailable"]:
            print(f"{name}: {info['unavailable']}")
    width = max(len(r["rule"]) for r in report["rules"])
    cols = {n: max(30, len(n)) for n in names}
    print(f"{'rule':<{width}}  exp  " + "  ".join(f"{n:<{cols[n]}}" for n in names))
    for rule in report["rules"]:
        cells = [
            f"{cell(report['results'][n].get(rule['rule'])):<{cols[n]}}" for n in names
        ]
        print(f"{rule['rule']:<{width}}  {rule['expected']}  " + "  ".join(cells))
    for name in names:
        s = summary(report, name)
        print(
            f"{name}: {s['expected_status']}/{s['rules']} expected status, "
            f"{s['closed']} closed, app handed {s['app_saw_bad']} bad requests, "
            f"kept reading after {s['kept_reading']}, {s['smuggled']} hidden requests"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, of {', '.join(SERVERS)}",
    )
    parser.add_argument("--only", help="comma-separated rule names (corpus file stems)")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per request"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where results.* go")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    cases = corpus("invalid")
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.name in wanted]
    started = time.monotonic()
    report = run_lab(names, cases, args.timeout)
    report["seconds"] = round(time.monotonic() - started, 1)
    print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown(report))
    print(f"wrote {args.out / 'results.md'} and results.json ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
