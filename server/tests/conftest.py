"""Shared test helpers: wizgy as a real subprocess on port 0, and raw sockets.

    with run_wizgy("-k", "threaded", "testapp:app", cwd=APPS) as server:
        server.port, server.url, server.proc, server.output()

The server runs in its own process group; on exit it gets SIGTERM, then SIGKILL for
the whole group if it lingers, so no test leaves a process behind even on failure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SERVER = TESTS.parent
REPO = SERVER.parent
APPS = REPO / "apps"
TEST_APPS = TESTS / "apps"

# The interpreter that runs the server (and wizgy's other commands): this one, or the
# one WIZGY_TEST_PYTHON names. `make test-pypy` runs this suite on CPython with the
# server on PyPy: the clients (requests, Locust) stay where they are fastest.
SERVER_PYTHON = os.path.abspath(os.environ.get("WIZGY_TEST_PYTHON") or sys.executable)


@functools.lru_cache(maxsize=1)
def server_implementation() -> str:
    """platform.python_implementation() of SERVER_PYTHON: "CPython" or "PyPy"."""
    code = "import platform; print(platform.python_implementation())"
    return subprocess.run([SERVER_PYTHON, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()

# Every model; behaviour tests are written once and parametrised over these.
MODELS = ["iterative", "threaded", "evloop", "fork", "prefork"]
AVAILABLE_MODELS = [m for m in MODELS if (SERVER / "wizgy" / "models" / f"{m}.py").exists()]

LISTENING = re.compile(r"Listening at: http://(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)")


def pytest_report_header(config) -> str:
    version = subprocess.run([SERVER_PYTHON, "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=False).stdout
    return f"server interpreter: {SERVER_PYTHON}: {' '.join(version.split())}"


class Server:
    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.port = 0
        self.final_output: str | None = None  # kept once the log file is gone

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        if self.final_output is not None:
            return self.final_output
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in server output:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # anything of ours still in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def run_wizgy(*args: str, env: dict | None = None, cwd=None, bind: bool = True,
              startup: float = 15.0, preexec_fn=None, pass_fds=()):
    """Start `python -m wizgy -b 127.0.0.1:0 ARGS`; yield a Server once it listens."""
    cmd = [SERVER_PYTHON, "-m", "wizgy", *(["-b", "127.0.0.1:0"] if bind else []), *args]
    with run_server(cmd, env=env, cwd=cwd, startup=startup, preexec_fn=preexec_fn,
                    pass_fds=pass_fds) as server:
        if not {"iterative", "threaded", "fork"} & set(args):  # a master and workers:
            wait_for_workers(server)  # booted before the test counts on them
        yield server


BOOTING = re.compile(r"Booting worker with pid (\d+)|Status at: \S+ \((\d+)\)")
SIGALRM_BIT = 1 << (signal.SIGALRM - 1)


def wait_for_workers(server: Server, timeout: float = 15.0) -> None:
    """Until a pre-fork master has forked all its workers and each one runs its model.

    Read from the kernel, not guessed with a sleep: a worker has booted once its model
    installed its signal handlers (base.Model.install_signals catches SIGALRM, which
    the master leaves alone, so SigCgt shows it), and the master has forked them all
    once it sleeps (state S) in its loop after the first spawn round, with no child it
    has not logged (as a worker, or as its status process). A master that exits
    (workers failing to boot) ends the wait too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return
        logged = BOOTING.findall(server.output())
        booting = {int(worker) for worker, _ in logged if worker}
        known = booting | {int(status) for _, status in logged if status}
        if booting and set(children_of(server.pid)) <= known \
                and proc_state(server.pid) == "S" \
                and all(signals_caught(pid) & SIGALRM_BIT for pid in booting
                        if proc_state(pid) not in (None, "Z")):
            return
        time.sleep(0.01)
    raise AssertionError(f"workers did not boot in {timeout} s:\n{server.output()}")


def signals_caught(pid: int) -> int:
    """The SigCgt mask of /proc/PID/status (bit N-1 set: signal N has a handler); all
    bits once the process is gone (nothing left to wait for)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ~0
    return int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)


@contextlib.contextmanager
def run_server(cmd: list, env: dict | None = None, cwd=None, startup: float = 15.0,
               preexec_fn=None, pass_fds=()):
    """Start any server that prints wizgy's "Listening at: URL" (wizgy, the labs' small
    servers); yield a Server once it listens."""
    full_env = {**os.environ, "PYTHONPATH": f"{SERVER}:{TEST_APPS}:{APPS}",
                "PYTHONUNBUFFERED": "1"}
    full_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="wizgy-test-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                    cwd=cwd or TEST_APPS, start_new_session=True,
                                    preexec_fn=preexec_fn, pass_fds=pass_fds)
        server = Server(proc, log_path)
        try:
            deadline = time.monotonic() + startup
            while True:
                m = LISTENING.search(server.output())
                if m:
                    server.port = int(m.group(1))
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start ({cmd}):\n{server.output()}")
                time.sleep(0.02)
            yield server
        finally:
            server.stop()
            server.final_output = server.output()


class LogView:
    """One test's view of a server that several tests share: the same process and
    port, but only the log written since the test began, so that what a test asserts
    about the log is about its own requests."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = len(server.output())

    def __getattr__(self, name: str):
        return getattr(self.server, name)

    def output(self) -> str:
        return self.server.output()[self.start:]

    wait_for_output = Server.wait_for_output


TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*(.*)", re.M)


def unexpected_tracebacks(output: str, expected: str | None = None) -> list[str]:
    """The exception line of each traceback in `output`, but those that match the
    regular expression `expected` (the one a test provokes on purpose)."""
    return [line for line in TRACEBACK.findall(output)
            if not (expected and re.fullmatch(expected, line))]


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_until_close(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (raises on timeout)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close nothing, and read until the server closes."""
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        return read_until_close(sock, timeout)


_leftover: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Read one Content-Length or chunked response from a keep-alive socket; bytes of
    the next (pipelined) response are kept for the next call."""
    status, headers, body, rest = _read_response(sock, timeout, _leftover.pop(sock, b""))
    _leftover[sock] = rest
    return status, headers, body


def _read_response(sock, timeout, buf):
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            rest += data
        return status, headers, rest[:length], rest[length:]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-chunk")
                rest += data
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-chunk")
                rest += data
            if size == 0:
                return status, headers, body, rest[2:]
            body += rest[:size]
            rest = rest[size + 2:]
    if headers.get("connection") == "close" or status in (204, 304):
        return status, headers, (b"" if status in (204, 304) else rest + read_until_close(sock)), b""
    return status, headers, rest, b""


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def proc_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat ("R", "S", "Z"...), or None once the process is reaped.

    A process can be reaped between open() and read(): that read fails with ESRCH, not ENOENT.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def zombies_of(pid: int) -> list[int]:
    return [child for child in children_of(pid) if proc_state(child) == "Z"]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll until condition() is truthy; its value. Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def workers(srv) -> set[int]:
    """The pids of a pre-fork master's children (its workers)."""
    return set(children_of(srv.pid))


def skip_or_fail(message: str) -> None:
    """A part this machine cannot run: skipped on a developer's machine, with the reason;
    a failure under CI (CI=true), where .ci/run provides everything."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(*names: str) -> None:
    """A host tool is missing: skip_or_fail, saying how to get it."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")


@pytest.fixture(params=AVAILABLE_MODELS)
def model(request) -> str:
    return request.param
