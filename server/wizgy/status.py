"""The status listener: `--status-bind HOST:PORT` serves /status (JSON) and /metrics
(Prometheus text) from a small process of its own, so no concurrency model serves it
and a lesson that breaks the app's port (descriptors exhausted, fork failing) cannot
hide what is happening.

Call flow

    cli.main()                          binds the app's listeners and the status one
      status.start(ctx, status_listener, listeners)
        os.fork() --- status process: close the app's listeners, then StatusProcess.run():
        |               select() on the status listener and the event pipe, 1 s at most;
        |               each second: sample /proc, turn changes into events; exit as soon
        |               as getppid() is no longer the main process
        |               GET /status, /metrics: read /proc and the Scoreboard, answer, close
        main process: ctx.status_pid = pid; ctx.event = the event pipe's send()
      model.run()                       reaps the status process like any child if it
                                        dies, but never counts or respawns it
      status.stop(ctx)                  SIGTERM and waitpid() the status process

What it reads: /proc/<main>/task/*/children recursively (workers, fork children and
their zombies), /proc/<pid>/stat (state), /proc/<pid>/fd (open descriptors),
/proc/<pid>/status (VmRSS), /proc/<main>/limits (RLIMIT_NOFILE, RLIMIT_NPROC), and the
Scoreboard the main process created before forking (a shared mapping: counters of
every process, no locks, read-only here). It never waits for, signals or reaps any
process but itself.
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import signal
import socket
import sys
import time

from . import events, proctitle
from .compat import TIMEOUT
from .http import NEED_DATA, HTTPError, Request, RequestParser
from .scoreboard import COUNTERS

MAIN_ROLE = {"prefork": "master", "fork": "parent"}  # anything else: "server"
CHILD_ROLE = {"prefork": "worker"}  # anything else: "child"
SAMPLE_EVERY = 1.0  # seconds between the status process's own looks at /proc
MAX_LISTED = 1000  # processes listed one by one; counts stay exact beyond it
CLIENT_TIMEOUT = 2.0  # a status client gets this long to send its request head
IGNORED_SIGNALS = ("SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1",
                   "SIGUSR2", "SIGWINCH")  # sent to the whole group: meant for the server
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIMITS = re.compile(r"^Max (open files|processes)\s+(\S+)", re.MULTILINE)


# starting and stopping (main process) --------------------------------------------------
def start(ctx, status_listener: socket.socket | None, app_listeners: list) -> None:
    """Fork the status process (if --status-bind is set); set ctx.status_pid, ctx.event."""
    ctx.status_pid = None
    ctx.event = events.discard
    if status_listener is None:
        return
    pipe = events.EventPipe()
    main_pid = os.getpid()
    # A signal sent to the whole group (Ctrl-C, kill -HUP -PGID) is the server's: held
    # back over fork() until the status process ignores it, else one arriving that early
    # (a slow start, as on PyPy) would kill the status process. TERM too, until the
    # server knows the status process's PID: a stop signal raises here (the model's
    # handlers are not in yet), and inside fork() it would raise in the interpreter's
    # after-fork hooks, which drop exceptions: the stop would be lost.
    group_signals = {getattr(signal, name) for name in IGNORED_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, group_signals | {signal.SIGTERM})
    pid = os.fork()
    if pid == 0:  # the status process; never returns
        code = 1
        try:
            for signum in group_signals:
                signal.signal(signum, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # status.stop's
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            proctitle.set_title("status")
            for listener in app_listeners:
                listener.close()
            pipe.close_writer()
            code = StatusProcess(ctx, status_listener, pipe.read_fd, main_pid).run()
        finally:
            os._exit(code)
    ctx.status_pid = pid  # for status.stop, before a signal held back can stop the start
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    status_listener_url = url_of(status_listener)
    status_listener.close()
    pipe.close_reader()
    ctx.event = pipe.send
    ctx.logs.error.info("Status at: %s (%s)", status_listener_url, pid)


def stop(ctx) -> None:
    """After the model has returned: end the status process and reap it."""
    pid = getattr(ctx, "status_pid", None)
    if not pid:
        return
    ctx.status_pid = None
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass  # the model reaped it already


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if listener.family == socket.AF_INET6 else \
        f"http://{host}:{port}"


# /proc ---------------------------------------------------------------------------------
def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the process is gone (or not ours to read)
        return None


def proc_state(pid: int) -> str | None:
    """R, S, D, Z, T...: the field after the command name in /proc/PID/stat."""
    text = read(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split()[0] if text else None


def proc_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used (utime + stime, /proc/PID/stat
    fields 14 and 15, in clock ticks)."""
    text = read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3, the state
    return round((int(fields[11]) + int(fields[12])) / CLOCK_TICKS, 2)


def proc_rss(pid: int) -> int:
    text = read(f"/proc/{pid}/status") or ""
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0  # a zombie has no VmRSS


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def proc_limits(pid: int) -> tuple[int | None, int | None]:
    """Soft RLIMIT_NOFILE and RLIMIT_NPROC of a process (None: unlimited or unknown)."""
    found = {name: None if value == "unlimited" else int(value)
             for name, value in LIMITS.findall(read(f"/proc/{pid}/limits") or "")}
    return found.get("open files"), found.get("processes")


def proc_children(pid: int) -> list[int]:
    """Direct children, from every thread's children file (a thread may fork too)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        out.extend(int(p) for p in (read(f"/proc/{pid}/task/{tid}/children") or "").split())
    return out


def descendants(pid: int, skip: int | None) -> list[tuple[int, int]]:
    """(pid, depth) of every process below `pid`, leaving out `skip` (the status one)."""
    out, todo = [], [(child, 1) for child in proc_children(pid)]
    while todo:
        child, depth = todo.pop(0)
        if child == skip:
            continue
        out.append((child, depth))
        todo.extend((grandchild, depth + 1) for grandchild in proc_children(child))
    return out


# the report ----------------------------------------------------------------------------
def runtime() -> str:
    """The interpreter serving: "CPython 3.13.5", or PyPy's own release and the Python
    version it implements, "PyPy 7.3.19 (Python 3.10)"."""
    if sys.implementation.name == "pypy":
        release = ".".join(map(str, sys.pypy_version_info[:3]))
        return f"PyPy {release} (Python {sys.version_info[0]}.{sys.version_info[1]})"
    return f"{platform.python_implementation()} {platform.python_version()}"


def snapshot(settings, board, main_pid: int, status_pid: int, started: float,
             recent: list[dict]) -> dict:
    """Everything /status says, read now."""
    model = settings.main_model
    per_pid = {s["pid"]: s for s in board.live()} if board is not None else {}
    processes = [process(main_pid, MAIN_ROLE.get(model, "server"), per_pid)]
    for pid, depth in descendants(main_pid, skip=status_pid):
        child = process(pid, CHILD_ROLE.get(model, "child") if depth == 1 else "child",
                        per_pid)
        if child["state"] != "?":  # else reaped between listing it and reading it
            processes.append(child)
    processes.append(process(status_pid, "status", {}))
    children = processes[1:-1]
    nofile, nproc = proc_limits(main_pid)
    return {
        "hostname": socket.gethostname(),
        "time": round(time.time(), 3),
        "uptime_seconds": round(time.monotonic() - started, 1),
        "model": settings.model,
        "runtime": runtime(),
        "lesson": settings.lesson,
        "app": settings.app,
        "workers": sum(p["role"] == "worker" for p in children) if model == "prefork" else None,
        "threads": settings.worker_threads,
        "pid": main_pid,
        "role": processes[0]["role"],
        "status_pid": status_pid,
        "children": len(children),
        "zombies": sum(p["state"] == "Z" for p in children),
        "open_fds": processes[0]["open_fds"],
        "open_fds_max": max((p["open_fds"] or 0) for p in processes[:-1]),
        "nofile_limit": nofile,
        "nproc_limit": nproc,
        **counters(board, [per_pid[p["pid"]] for p in processes[:-1]
                           if p["state"] != "Z" and p["pid"] in per_pid]),
        # a lesson may leave thousands of zombies: list the first, count them all
        "processes": processes if len(processes) <= MAX_LISTED else
        processes[:MAX_LISTED - 1] + processes[-1:],
        "processes_omitted": max(0, len(processes) - MAX_LISTED),
        "events": recent,
    }


def counters(board, running: list[dict]) -> dict:
    """The Scoreboard's counters, summed over every slot (ended processes' included);
    the connection gauges only over running processes' slots, since an exited (or
    zombie) child's slot keeps the `active` it ended with until it is reaped."""
    totals = board.totals() if board is not None else dict.fromkeys(COUNTERS, 0)
    return {
        **{name: totals[name] for name in COUNTERS},
        "connections_active": sum(slot["active"] for slot in running),
        "connections_idle": sum(slot["idle"] for slot in running),
    }


def process(pid: int, role: str, per_pid: dict) -> dict:
    state = proc_state(pid)
    return {
        "pid": pid,
        "role": role,
        "state": state or "?",
        "open_fds": proc_fds(pid) if state != "Z" else 0,
        "rss_bytes": proc_rss(pid),
        "cpu_seconds": proc_cpu_seconds(pid),  # rates from two reports: the live view's CPU %
        "requests": per_pid.get(pid, {}).get("requests_total", 0),
    }


METRICS = (  # (JSON key, metric name, type, help)
    ("requests_total", "wizgy_requests_total", "counter", "Requests answered, all processes."),
    ("responses_4xx", "wizgy_responses_4xx_total", "counter", "Responses with a 4xx status."),
    ("responses_5xx", "wizgy_responses_5xx_total", "counter", "Responses with a 5xx status."),
    ("connections_total", "wizgy_connections_total", "counter", "Connections accepted."),
    ("fork_failures", "wizgy_fork_failures_total", "counter", "fork() calls that failed."),
    ("emfile_events", "wizgy_emfile_events_total", "counter",
     "accept() failures for lack of descriptors (EMFILE/ENFILE)."),
    ("children", "wizgy_children", "gauge", "Child processes of the main process."),
    ("zombies", "wizgy_zombies", "gauge", "Children exited but not reaped (state Z)."),
    ("open_fds", "wizgy_open_fds", "gauge", "Open descriptors of the main process."),
    ("open_fds_max", "wizgy_open_fds_max", "gauge", "Most open descriptors of any process."),
    ("nofile_limit", "wizgy_nofile_limit", "gauge", "Soft RLIMIT_NOFILE of the main process."),
    ("nproc_limit", "wizgy_nproc_limit", "gauge", "Soft RLIMIT_NPROC of the main process."),
    ("connections_active", "wizgy_connections_active", "gauge", "Connections in a request."),
    ("connections_idle", "wizgy_connections_idle", "gauge", "Idle keep-alive connections."),
)
PER_PROCESS = (  # (process key, metric name, type, help)
    ("open_fds", "wizgy_process_open_fds", "gauge", "Open descriptors of one process."),
    ("rss_bytes", "wizgy_process_resident_memory_bytes", "gauge", "Resident memory."),
    ("requests", "wizgy_process_requests_total", "counter", "Requests this process answered."),
    ("cpu_seconds", "wizgy_process_cpu_seconds_total", "counter",
     "User and system CPU time of one process."),
)


def metrics(report: dict) -> str:
    """The report in the Prometheus text exposition format (version 0.0.4)."""
    info = {k: report[k] or "" for k in ("model", "runtime", "lesson", "app", "hostname")}
    lines = ["# HELP wizgy_info The server's model, runtime, lesson, app and host.",
             "# TYPE wizgy_info gauge", f"wizgy_info{{{labels(info)}}} 1"]
    for key, name, kind, text in METRICS:
        value = report[key]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}",
                  f"{name} {'+Inf' if value is None else value}"]
    for key, name, kind, text in PER_PROCESS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for p in report["processes"]:
            if p[key] is not None:
                lines.append(f"{name}{{{labels(pid=p['pid'], role=p['role'], state=p['state'])}}}"
                             f" {p[key]}")
    return "\n".join(lines) + "\n"


def labels(pairs: dict | None = None, **more) -> str:
    def escape(value) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return ",".join(f'{k}="{escape(v)}"' for k, v in {**(pairs or {}), **more}.items())


# the status process --------------------------------------------------------------------
class StatusProcess:
    def __init__(self, ctx, listener: socket.socket, events_fd: int, main_pid: int) -> None:
        self.settings = ctx.settings
        self.board = ctx.board
        self.log = ctx.logs.error
        self.listener = listener
        self.events = events.EventLog(events_fd)
        self.main_pid = main_pid
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.last: dict | None = None  # the previous sample, to notice changes

    def run(self) -> int:
        self.listener.setblocking(False)
        self.events.add("status started", pid=self.pid)
        next_sample = 0.0
        while os.getppid() == self.main_pid:  # reparented: the server is gone
            now = time.monotonic()
            if now >= next_sample:
                self.observe()
                next_sample = now + SAMPLE_EVERY
            watched = [self.listener] + ([] if self.events.closed else [self.events.read_fd])
            readable, _, _ = select.select(watched, [], [], max(0.0, next_sample - now))
            if self.events.read_fd in readable:
                self.events.pump()
            if self.listener in readable:
                self.accept()
        return 0

    def report(self) -> dict:
        self.events.pump()
        return snapshot(self.settings, self.board, self.main_pid, self.pid, self.started,
                        self.events.recent())

    def observe(self) -> None:
        """Turn what only /proc and the counters show into events (the models send
        their own for what they do: worker started, worker exited, signal received)."""
        now = self.report()
        last, self.last = self.last, now
        if last is None:
            return
        zombies_then, zombies_now = last["zombies"], now["zombies"]
        if zombies_then.bit_length() != zombies_now.bit_length():  # 0, 1, 2-3, 4-7, ...
            self.events.add(f"zombies: {zombies_then} -> {zombies_now}", pid=self.main_pid)
        for key, what in (("emfile_events", "EMFILE: accept() failed"),
                          ("fork_failures", "fork() failed")):
            if now[key] != last[key]:
                self.events.add(f"{what} {now[key] - last[key]} times", pid=self.main_pid)

    # HTTP: one short request at a time, then close -----------------------------------
    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:  # EAGAIN, a client that left, or out of descriptors: next time
            return
        try:
            sock.settimeout(CLIENT_TIMEOUT)
            self.answer(sock)
        except OSError:
            pass
        finally:
            sock.close()

    def answer(self, sock: socket.socket) -> None:
        try:
            request = read_request(sock)
        except HTTPError as error:
            sock.sendall(response(error.status, "text/plain", error.message.encode()))
            return
        if request is None:
            return
        status, ctype, body = self.route(request)
        sock.sendall(response(status, ctype, b"" if request.method == "HEAD" else body,
                              length=len(body)))

    def route(self, request: Request) -> tuple[int, str, bytes]:
        if request.method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET or HEAD only\n"
        path = request.path.rstrip("/") or "/"
        if path in ("/status", "/wizgy/status"):
            body = json.dumps(self.report(), indent=1).encode()
            return 200, "application/json", body + b"\n"
        if path in ("/metrics", "/wizgy/metrics"):
            return 200, "text/plain; version=0.0.4; charset=utf-8", \
                metrics(self.report()).encode()
        if path == "/":
            return 200, "text/plain", b"wizgy status: /status (JSON), /metrics (Prometheus)\n"
        return 404, "text/plain", b"not found: try /status or /metrics\n"


def read_request(sock: socket.socket) -> Request | None:
    parser = RequestParser()
    while True:
        event = parser.next_event()
        if isinstance(event, Request):
            return event
        if event is not NEED_DATA:  # the client closed before a request
            return None
        try:
            parser.receive(sock.recv(8192))
        except TIMEOUT:
            raise HTTPError(408, "request head not received in time") from None


REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout"}


def response(status: int, ctype: str, body: bytes, length: int | None = None) -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Bad Request')}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Cache-Control: no-store\r\n"
            "Access-Control-Allow-Origin: *\r\n"  # the live view may be served elsewhere
            "Connection: close\r\n\r\n")
    return head.encode() + body
