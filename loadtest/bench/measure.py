"""Running one measurement: start a server, watch its processes, drive it with wrk.

A server runs in its own process group (start_new_session), so stopping it ends the
master and every worker it forked, and nothing else. CPU comes from /proc/<pid>/stat
(utime + stime of every live process in the server's tree, plus what the master has
already collected from reaped children: cutime + cstime), RSS from /proc/<pid>/status,
sampled every 0.1 s while wrk runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 60.0  # Django applies its migrations at import


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # fields[0] is state (field 3); ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def read_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat:
                children.setdefault(stat[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_ticks(root: int) -> int:
    return sum((read_stat(pid) or (0, 0))[1] for pid in process_tree(root))


class ServerFailed(Exception):
    """The server did not come up, or did not answer its scenario's path with 2xx."""


@dataclass
class Server:
    argv: list[str]
    cwd: str
    port: int
    log_path: str
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, path: str, method: str = "GET") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise ServerFailed(f"not listening after {START_TIMEOUT:.0f} s: {self.log_tail()}")
        self.check(path, method)

    def check(self, path: str, method: str) -> None:
        data = b"x" * 1024 if method == "POST" else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised on
            raise ServerFailed(f"{method} {path}: {exc}; {self.log_tail()}") from None

    def log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(tail[-lines:])

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it after 5 s."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(pgid, sig)
                self.proc.wait(5.0)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        # workers left behind by a master that exited first are still in the group
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Watch:
    """CPU and RSS of a server's process tree while wrk runs."""

    root: int
    interval: float = 0.1
    peak_total_kib: int = 0
    peak_process_kib: int = 0
    peak_worker_kib: int = 0
    most_processes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.ticks0, self.t0 = cpu_ticks(self.root), time.monotonic()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.ticks1, self.t1 = cpu_ticks(self.root), time.monotonic()
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            tree = process_tree(self.root)
            rss = {pid: read_rss_kib(pid) for pid in tree}
            workers = [kib for pid, kib in rss.items() if pid != self.root] or [rss[self.root]]
            self.peak_total_kib = max(self.peak_total_kib, sum(rss.values()))
            self.peak_process_kib = max(self.peak_process_kib, max(rss.values()))
            self.peak_worker_kib = max(self.peak_worker_kib, max(workers))
            self.most_processes = max(self.most_processes, len(tree))
            self._stop.wait(self.interval)

    def result(self) -> dict:
        seconds = (self.ticks1 - self.ticks0) / CLK_TCK
        return {
            "cpu_seconds": round(seconds, 3),
            "cpu_percent": round(100 * seconds / (self.t1 - self.t0), 1),
            "rss_total_mib": round(self.peak_total_kib / 1024, 1),
            "rss_worker_mib": round(self.peak_worker_kib / 1024, 1),
            "processes": self.most_processes,
        }


def wrk_argv(
    url: str, seconds: float, connections: int, threads: int, headers, script: str, cpu: str | None
) -> list[str]:
    # wrk takes whole seconds only
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        script,
    ]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    return (["taskset", "-c", cpu] if cpu else []) + argv


def run_wrk(argv: list[str], body_bytes: int, seconds: float) -> dict:
    env = dict(os.environ, BENCH_BODY_BYTES=str(body_bytes))
    done = subprocess.run(
        argv, env=env, check=False, capture_output=True, text=True, timeout=seconds + 30
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    said = " ".join((done.stderr or done.stdout).split())
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {said[:200]}")


class IdleHelper:
    """idle.py in its own process, holding the idle connections during one run."""

    def __init__(
        self, python: str, script: str, port: int, count: int, seconds: float, cpu: str | None
    ) -> None:
        argv = [python, script, "127.0.0.1", str(port), str(count), f"{seconds:g}"]
        if cpu:
            argv = ["taskset", "-c", cpu] + argv
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(f"idle helper failed: {line.strip()} {self.proc.stdout.read()}")
        self.ready = int(line.split()[1])

    def result(self, timeout: float) -> dict:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return {"error": "idle helper did not finish"}
        for line in out.splitlines():
            if line.startswith("IDLE_JSON "):
                return json.loads(line[len("IDLE_JSON ") :])
        return {"error": out.strip()[-300:]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
