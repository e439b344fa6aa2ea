"""-k fork: a child per connection, reaped; bounded by --max-children; clean after bursts.

The behaviour every model shares (HTTP, WSGI, TERM/INT) is in test_server.py, which
runs against fork too. Here: what only a process-per-connection server has.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    REPO,
    SERVER,
    TEST_APPS,
    children_of,
    connect,
    open_fds,
    read_response,
    run_wizgy,
    skip_or_fail,
    zombies_of,
)

GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


def request(sock, path: bytes) -> bytes:
    sock.sendall(GET % path)
    status, _, body = read_response(sock, timeout=10)
    assert status == 200
    return body


def test_each_connection_has_its_own_child_for_all_its_requests():
    with run_wizgy("-k", "fork", "testapp:app") as srv, connect(srv.port) as first, \
            connect(srv.port) as second:
        pids = [request(first, b"/pid"), request(first, b"/pid"), request(second, b"/pid")]
        assert pids[0] == pids[1] != pids[2]  # keep-alive stays in its child
        assert {int(p) for p in pids} <= set(children_of(srv.pid))
        assert srv.pid not in {int(p) for p in pids}


def test_max_children_bounds_the_children_and_nobody_is_refused():
    with run_wizgy("-k", "fork", "--max-children", "2", "testapp:app") as srv:
        results: list[int] = []
        most = 0

        def slow() -> None:
            with connect(srv.port, timeout=10) as sock:
                sock.sendall(GET % b"/sleep?s=0.5")
                results.append(read_response(sock, timeout=10)[0])

        threads = [threading.Thread(target=slow) for _ in range(6)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            most = max(most, len(children_of(srv.pid)))
            time.sleep(0.02)
        assert results == [200] * 6
        assert most == 2  # six clients, two children at a time: three rounds


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fork", "prefork"])
def test_no_zombies_and_no_leaked_descriptors_after_500_connections(model):
    """Four bursts of 128 concurrent clients (loadtest/lesson_client.py): afterwards no
    zombie under the server and no descriptor more than before, checked in /proc."""
    with run_wizgy("-k", model, "-w", "2", "testapp:app") as srv:
        with connect(srv.port) as sock:
            request(sock, b"/hello")
        time.sleep(0.3)
        before = open_fds(srv.pid)
        for _ in range(4):
            out = subprocess.run([sys.executable, str(REPO / "loadtest" / "lesson_client.py"),
                                  "--port", str(srv.port), "--max-clients", "128", "--json"],
                                 check=False, capture_output=True, text=True, timeout=60).stdout
            report = json.loads(out)
            assert report["succeeded"] == 128, report
        deadline = time.monotonic() + 5
        while (zombies_of(srv.pid) or open_fds(srv.pid) != before) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert zombies_of(srv.pid) == []
        assert open_fds(srv.pid) == before
        if model == "fork":
            assert children_of(srv.pid) == []
        else:
            assert len(children_of(srv.pid)) == 2
            for worker in children_of(srv.pid):
                assert open_fds(worker) < 20


def test_graceful_stop_waits_for_children_then_exits_0():
    with run_wizgy("-k", "fork", "testapp:app") as srv:
        results = []

        def slow() -> None:
            with connect(srv.port, timeout=10) as sock:
                sock.sendall(GET % b"/sleep?s=1")
                response = read_response(sock, timeout=10)
                results.append((*response, sock.recv(1)))  # then the child closes

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.4)
        assert len(children_of(srv.pid)) == 3
        srv.proc.terminate()
        for thread in threads:
            thread.join(10)
        assert [r[0] for r in results] == [200] * 3
        assert [r[3] for r in results] == [b""] * 3  # keep-alive ends with the stop
        assert srv.proc.wait(10) == 0
        assert "waiting for 3 children to finish" in srv.output()


SYSTEM_PYTHON = Path("/usr/bin/python3")


def processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                count += 1
    return count


def test_fork_failure_is_answered_503_and_the_server_recovers(tmp_path):
    """Under a process limit fork() fails with EAGAIN: the parent answers 503 and logs;
    once children have exited, it forks again. Run as `nobody` because the kernel does
    not apply RLIMIT_NPROC to root (and with the system Python, which nobody can run)."""
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        skip_or_fail(f"needs root and {SYSTEM_PYTHON} to run the server as nobody "
                     "(root ignores RLIMIT_NPROC)")
    nobody = pwd.getpwnam("nobody")
    limit = processes_of(nobody.pw_uid) + 4  # the parent and three children

    def as_nobody_with_few_processes() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SYSTEM_PYTHON), "-m", "wizgy", "-b", "127.0.0.1:0", "-k", "fork",
             "testapp:app"], cwd=TEST_APPS, stdout=log, stderr=subprocess.STDOUT,
            env={"PYTHONPATH": str(SERVER), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin"},
            start_new_session=True,
            preexec_fn=as_nobody_with_few_processes)  # noqa: PLW1509 - no threads yet here
    try:
        deadline = time.monotonic() + 15
        while not (m := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                                  log_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        port = int(m.group(1))
        statuses: list[int] = []

        def slow() -> None:
            with connect(port, timeout=10) as sock:
                sock.sendall(GET % b"/sleep?s=1")
                statuses.append(read_response(sock, timeout=10)[0])

        threads = [threading.Thread(target=slow) for _ in range(6)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(10)
        assert sorted(statuses) == [200] * 3 + [503] * 3, statuses
        assert log_path.read_text().count("fork() failed: Resource temporarily unavailable") == 3
        time.sleep(0.3)  # the three children are reaped: processes are available again
        with connect(port) as sock:
            assert request(sock, b"/hello") == b"Hello, World!\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
