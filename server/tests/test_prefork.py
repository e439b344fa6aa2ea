"""-k prefork: the master's duties, with real signals sent to a real master.

Worker counts are read from /proc (the master's children) and from /pid answers
(which worker served a request). The behaviour every model shares, TERM letting an
in-flight request finish and INT stopping at once included, is in test_server.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    SERVER,
    SERVER_PYTHON,
    children_of,
    connect,
    exchange,
    proc_state,
    read_response,
    read_until_close,
    run_wizgy,
    wait_for,
    workers,
    zombies_of,
)

GET = b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def get(port: int, path: bytes = b"/pid", timeout: float = 10.0) -> tuple[int, bytes]:
    with connect(port, timeout) as sock:
        sock.sendall(GET % path)
        status, _, body = read_response(sock, timeout)
        return status, body


def write_app(directory: Path, version: str) -> None:
    """A module whose answer says which import of it is running."""
    (directory / "reloadapp.py").write_text(
        f"VERSION = {version!r}\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [VERSION.encode()]\n")


def test_ttin_and_ttou_change_the_number_of_workers():
    with run_wizgy("-k", "prefork", "-w", "2", "testapp:app") as srv:
        two = wait_for(lambda: len(workers(srv)) == 2 and workers(srv), what="2 workers")
        os.kill(srv.pid, signal.SIGTTIN)
        three = wait_for(lambda: len(workers(srv)) == 3 and workers(srv), what="3 workers")
        assert two < three
        served = {int(get(srv.port)[1]) for _ in range(30)}
        assert served <= three
        for _ in range(2):
            os.kill(srv.pid, signal.SIGTTOU)
            time.sleep(0.3)  # two signals at once would merge into one
        one = wait_for(lambda: len(workers(srv)) == 1 and workers(srv), what="1 worker")
        assert one <= three  # the newest stays, the oldest went first
        assert {int(get(srv.port)[1]) for _ in range(5)} == one
        output = srv.output()
        assert "Handling signal: ttin" in output and output.count("Handling signal: ttou") == 2


def test_a_killed_worker_is_replaced():
    with run_wizgy("-k", "prefork", "-w", "2", "testapp:app") as srv:
        before = wait_for(lambda: len(workers(srv)) == 2 and workers(srv), what="2 workers")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        after = wait_for(lambda: len(workers(srv)) == 2 and victim not in workers(srv)
                         and workers(srv), what="a replacement")
        assert len(after - before) == 1
        srv.wait_for_output(rf"\[ERROR\] Worker {victim} was killed by signal SIGKILL, "
                            r"not by the master")
        assert get(srv.port, b"/hello") == (200, b"Hello, World!\n")


@pytest.mark.slow
def test_a_stuck_worker_is_killed_after_the_timeout_and_replaced():
    with run_wizgy("-k", "prefork", "-w", "1", "--timeout", "2", "testapp:app") as srv:
        (stuck,) = wait_for(lambda: workers(srv), what="a worker")
        started = time.monotonic()
        answer = exchange(srv.port, GET % b"/sleep?s=10", timeout=15)
        assert answer == b""  # killed mid-request: the connection just closes
        assert time.monotonic() - started < 6
        srv.wait_for_output(rf"WORKER TIMEOUT \(pid:{stuck}\)")
        status, body = get(srv.port)
        assert status == 200 and int(body) != stuck


def test_hup_reloads_the_app_and_loses_no_request(tmp_path):
    write_app(tmp_path, "one")
    with run_wizgy("-k", "prefork", "-w", "2", "reloadapp:app", cwd=tmp_path) as srv:
        answers: list[bytes] = []
        errors: list[Exception] = []
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                try:
                    status, body = get(srv.port, b"/")
                    answers.append(body if status == 200 else b"status %d" % status)
                except Exception as error:  # noqa: BLE001 - any failure is the finding
                    errors.append(error)

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        old = workers(srv)
        write_app(tmp_path, "second")  # another length: the .pyc check sees the change
        os.kill(srv.pid, signal.SIGHUP)
        wait_for(lambda: len(workers(srv)) == 2 and not workers(srv) & old, timeout=15,
                 what="the old workers to go")
        time.sleep(0.5)
        done.set()
        for thread in clients:
            thread.join(15)
        assert errors == []
        assert set(answers) == {b"one", b"second"}
        assert answers[-1] == b"second"
        assert len(answers) > 50
        assert "Handling signal: hup" in srv.output()


@pytest.mark.parametrize("model", ["evloop", "prefork"])
def test_reload_picks_up_an_edited_module(tmp_path, model):
    # --reload: the master sees the .py file change and reloads as on HUP; a module
    # the app imports only in the workers (as Django its views) counts too.
    write_app(tmp_path, "one")
    (tmp_path / "venv").mkdir()  # a virtualenv under the app is not watched
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "venv" / "lib.py").write_text("")
    with run_wizgy("-k", model, "-w", "1", "--reload", "reloadapp:app", cwd=tmp_path) as srv:
        srv.wait_for_output(r"Reloading when any of 1 .py files under ")
        assert get(srv.port, b"/") == (200, b"one")
        (tmp_path / "venv" / "lib.py").write_text("x = 1\n")
        write_app(tmp_path, "second")
        srv.wait_for_output(r"Code changed: .*reloadapp\.py")
        wait_for(lambda: get(srv.port, b"/") == (200, b"second"), timeout=10,
                 what="the new code to answer")
        assert "lib.py" not in srv.output()


def test_hup_reads_a_helper_module_the_app_imports_afresh(tmp_path):
    # The master imported the app, and with it its helper, at startup; a reload must
    # not hand the new workers that old helper from sys.modules.
    (tmp_path / "helperapp.py").write_text(
        "import reloadhelper\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [reloadhelper.VERSION.encode()]\n")
    (tmp_path / "reloadhelper.py").write_text("VERSION = 'one'\n")
    with run_wizgy("-w", "1", "helperapp:app", cwd=tmp_path) as srv:
        assert get(srv.port, b"/") == (200, b"one")
        (tmp_path / "reloadhelper.py").write_text("VERSION = 'second'\n")
        os.kill(srv.pid, signal.SIGHUP)
        wait_for(lambda: get(srv.port, b"/") == (200, b"second"), timeout=10,
                 what="the helper's new code to answer")


def test_workers_that_keep_failing_to_boot_stop_the_master(tmp_path):
    write_app(tmp_path, "one")
    with run_wizgy("-k", "prefork", "-w", "2", "reloadapp:app", cwd=tmp_path) as srv:
        wait_for(lambda: len(workers(srv)) == 2, what="2 workers")
        (tmp_path / "reloadapp.py").write_text("raise ImportError('broken on purpose')\n")
        os.kill(srv.pid, signal.SIGHUP)
        assert srv.proc.wait(20) == 3
        output = srv.output()
        assert "failed to boot" in output and "broken on purpose" in output
        assert children_of(srv.pid) == []


def test_an_unimportable_app_stops_the_master_before_any_fork():
    env = {**os.environ, "PYTHONPATH": str(SERVER)}
    result = subprocess.run([SERVER_PYTHON, "-m", "wizgy", "-k", "prefork", "-w", "2",
                             "-b", "127.0.0.1:0", "nosuchmodule:app"],
                            check=False, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "cannot import module 'nosuchmodule'" in result.stderr
    assert "Booting worker" not in result.stderr


def test_max_requests_recycles_workers():
    with run_wizgy("-k", "prefork", "-w", "1", "--max-requests", "3", "testapp:app") as srv:
        pids = [int(get(srv.port)[1]) for _ in range(9)]
        assert [len(set(pids[i:i + 3])) for i in (0, 3, 6)] == [1, 1, 1]
        assert len(set(pids)) == 3
        assert srv.output().count("reached --max-requests (3)") >= 2


@pytest.mark.parametrize("model", ["prefork", "evloop", "gthread"])
def test_the_last_response_before_max_requests_says_close(model):
    # The worker stops after its 3rd request: that response must say so, or a client
    # sends its next request (maybe a POST) into a connection about to close.
    keep_alive_get = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"
    with run_wizgy("-k", model, "-w", "1", "--max-requests", "3", "--keep-alive", "5",
                   "testapp:app") as srv:  # (keep-alive: sync defaults to 0)
        with connect(srv.port) as sock:
            answers = []
            for _ in range(3):
                sock.sendall(keep_alive_get)
                answers.append(read_response(sock))
            assert [h.get("connection") for _, h, _ in answers] == [None, None, "close"]
            assert len({body for _, _, body in answers}) == 1  # one worker served them
            assert read_until_close(sock) == b""
        wait_for(lambda: "reached --max-requests (3)" in srv.output(), timeout=10)


def test_gthread_runs_threaded_workers():
    with run_wizgy("-k", "gthread", "-w", "1", "--threads", "2", "testapp:app") as srv:
        results: list[tuple[int, bytes]] = []
        threads = [threading.Thread(target=lambda: results.append(get(srv.port, b"/pid")))]
        threads += [threading.Thread(target=lambda: results.append(get(srv.port, b"/sleep?s=1")))
                    for _ in range(2)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert time.monotonic() - started < 1.9  # both sleeps at once, in one worker
        assert sorted(status for status, _ in results) == [200, 200, 200]
        env = json.loads(get(srv.port, b"/environ")[1])
        assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is True


def test_usr1_reopens_the_log_files(tmp_path):
    log = tmp_path / "access.log"
    with run_wizgy("-k", "prefork", "-w", "1", "--access-logfile", str(log),
                   "testapp:app") as srv:
        get(srv.port, b"/hello")
        wait_for(lambda: log.exists() and "/hello" in log.read_text(), what="access line")
        log.rename(tmp_path / "access.log.1")  # what logrotate does
        os.kill(srv.pid, signal.SIGUSR1)
        srv.wait_for_output("Handling signal: usr1")
        time.sleep(1.5)  # the worker's watchdog reopens within a second

        wait_for(lambda: get(srv.port, b"/after-rotation") and log.exists()
                 and "/after-rotation" in log.read_text(), what="the new access log")
        assert "/after-rotation" not in (tmp_path / "access.log.1").read_text()


def become_subreaper() -> None:
    """What PID 1 in a container does by nature: orphans below us become our children."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def test_orphans_are_reaped_like_pid_1_must(tmp_path):
    (tmp_path / "orphanapp.py").write_text(
        "import os, time\n"
        "def app(environ, start_response):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(0.3)\n"  # the grandchild outlives its parent: an orphan
        "        os._exit(0)\n"
        "    os.waitpid(child, 0)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'orphaned']\n")
    with run_wizgy("-k", "prefork", "-w", "1", "--log-level", "debug", "orphanapp:app",
                   cwd=tmp_path, preexec_fn=become_subreaper) as srv:
        for _ in range(3):
            assert get(srv.port, b"/") == (200, b"orphaned")
        wait_for(lambda: srv.output().count("(not a worker)") == 3, what="3 orphans reaped")
        assert zombies_of(srv.pid) == [] and len(children_of(srv.pid)) == 1


def test_workers_leave_when_the_master_dies():
    with run_wizgy("-k", "prefork", "-w", "2", "testapp:app") as srv:
        pids = wait_for(lambda: len(workers(srv)) == 2 and workers(srv), what="2 workers")
        os.kill(srv.pid, signal.SIGKILL)

        def gone(pid: int) -> bool:  # exited (a zombie of whoever adopted it) or reaped
            return proc_state(pid) in ("Z", None)

        wait_for(lambda: all(gone(pid) for pid in pids), timeout=5, what="orphaned workers")
        assert "Master is gone" in srv.output()
