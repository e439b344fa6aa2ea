"""Process titles say which server runs: a real prefork server's master, workers and
status process, read from /proc (what `ps` and `top` show), with setproctitle
installed and without it."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    APPS,
    SERVER,
    SERVER_PYTHON,
    TEST_APPS,
    children_of,
    exchange,
    run_wizgy,
    skip_or_fail,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="process titles are read from /proc/PID/comm and cmdline, which only Linux has",
)


def answered(port: int) -> bool:
    response = exchange(port, b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return response.startswith(b"HTTP/1.1 200")


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def titles(srv, read) -> dict[int, str]:
    """{pid: title} of the master and every child (workers, the status process)."""
    return {pid: read(pid) for pid in [srv.pid, *children_of(srv.pid)]}


def expect_workers(srv, read, count: int) -> dict[int, str]:
    def settled():
        # every child titled as itself: a worker just forked still has the master's
        # title (under load, for a while), which is not yet a titled worker
        seen = titles(srv, read)
        return seen if len(seen) == count + 2 and "master" in seen[srv.pid] and all(
            "worker" in t or "status" in t for pid, t in seen.items() if pid != srv.pid
        ) else None  # fmt: skip

    return wait_for(settled, what=f"{count} titled workers")


STATUS = ["--status-bind", "127.0.0.1:0"]


def test_prefork_titles_show_model_and_role():
    # Both test venvs install setproctitle (requirements-dev, requirements-pypy): under CI
    # its absence from the server's interpreter is a failure, not a skip.
    found = subprocess.run([SERVER_PYTHON, "-c", "import setproctitle"], check=False,
                           capture_output=True).returncode == 0
    if not found:
        skip_or_fail(f"setproctitle is not importable by {SERVER_PYTHON} "
                     "(pip install wizgy[proctitle])")
    with run_wizgy("-k", "prefork", "-w", "2", "--threads", "4", *STATUS, "testapp:app") as srv:
        assert answered(srv.port)
        seen = sorted(expect_workers(srv, cmdline, 2).values())
        assert seen == ["wizgy: master [prefork]", "wizgy: status",
                        "wizgy: worker 1 [gthread 4 threads]",
                        "wizgy: worker 2 [gthread 4 threads]"], seen  # fmt: skip
        assert sorted(titles(srv, comm).values()) == [
            "wizgy master", "wizgy status", "wizgy worker 1", "wizgy worker 2"]  # fmt: skip

        # A worker more (TTIN) takes the next free number.
        srv.proc.send_signal(signal.SIGTTIN)
        seen = expect_workers(srv, cmdline, 3)
        assert "wizgy: worker 3 [gthread 4 threads]" in seen.values(), seen


def test_without_setproctitle_the_process_names_still_say_it(tmp_path):
    """The standard library only: /proc/PID/comm (15 bytes) carries role and number."""
    (tmp_path / "setproctitle.py").write_text("raise ImportError('not installed here')\n")
    path = f"{tmp_path}:{SERVER}:{TEST_APPS}:{APPS}"
    with run_wizgy("-k", "sync", "-w", "2", *STATUS, "testapp:app",
                   env={"PYTHONPATH": path}) as srv:  # fmt: skip
        seen = sorted(expect_workers(srv, comm, 2).values())
        assert seen == ["wizgy master", "wizgy status", "wizgy worker 1", "wizgy worker 2"]
        assert "wizgy:" not in cmdline(srv.pid)  # the command line stays as it was


def test_a_fork_child_and_a_threaded_server_are_titled_too():
    with run_wizgy("-k", "threaded", "--threads", "8", "testapp:app") as srv:
        # (titled just after "Listening at", which is all run_wizgy waits for here)
        wait_for(lambda: comm(srv.pid) == "wizgy server", what="the server's title")
        if importlib.util.find_spec("setproctitle"):
            assert cmdline(srv.pid) == "wizgy: server [threaded 8 threads]"
    with run_wizgy("-k", "fork", "--lesson", "no-reap", "testapp:app") as srv:
        assert answered(srv.port)
        child = wait_for(lambda: children_of(srv.pid), what="a zombie child")[0]
        assert comm(srv.pid) == "wizgy parent"
        assert comm(child) == "wizgy child"  # what `ps` shows for the zombie
        if importlib.util.find_spec("setproctitle"):
            assert cmdline(srv.pid) == "wizgy: parent [fork, lesson no-reap]"
