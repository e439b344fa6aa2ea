"""The command line and settings: one definition, flags, env vars, clear errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import (APPS, REPO, SERVER, SERVER_PYTHON, TEST_APPS, children_of, connect,
                      proc_state, read_response, run_wizgy, server_implementation,
                      skip_or_fail, wait_for)

from wizgy import config


def wizgy(*args, env=None, timeout=20):
    full_env = {**os.environ, "PYTHONPATH": f"{SERVER}:{TEST_APPS}"}
    full_env.update(env or {})
    return subprocess.run([SERVER_PYTHON, "-m", "wizgy", *args], capture_output=True,
                          text=True, env=full_env, cwd=TEST_APPS, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # (fd 0: a file, whoever runs the tests)


@pytest.mark.parametrize("args,message", [
    (["nosuchmodule:app"], "cannot import module 'nosuchmodule': ModuleNotFoundError"),
    (["testapp:nothing"], "module 'testapp' has no attribute 'nothing'"),
    (["testapp:CLOSE_LOG"], "is not callable"),
    (["-b", "localhost", "testapp:app"], "cannot parse bind address 'localhost'"),
    (["-b", "127.0.0.1:99999", "testapp:app"], "cannot parse bind address"),
    (["--limit-request-line", "-1", "testapp:app"], "--limit-request-line: must be 0 or more"),
    (["-w", "0", "testapp:app"], "--workers: must be 1 or more"),
    ([], "no application given"),
    (["--graceful-timeout", "inf", "testapp:app"], "--graceful-timeout: must be 0 or more"),
    (["--timeout", "nan", "testapp:app"], "--timeout: must be 0 or more seconds (and finite)"),
    (["--error-logfile", "/nonexistent/x.log", "testapp:app"],
     "cannot open log file /nonexistent/x.log: No such file or directory"),
    (["--access-logfile", "/", "testapp:app"], "cannot open log file /: Is a directory"),
    (["-b", "fd://x", "testapp:app"], "cannot bind fd://x: expected fd://NUMBER"),
    (["-b", "fd://0", "testapp:app"], "cannot bind fd://0: Socket operation on non-socket"),
    (["-b", "fd://987", "testapp:app"], "cannot bind fd://987: Bad file descriptor"),
])
def test_bad_configuration_is_one_line_and_exit_2(args, message):
    result = wizgy(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_port_in_use_is_exit_2():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = wizgy("-b", f"127.0.0.1:{port}", "testapp:app")
    assert result.returncode == 2
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in result.stderr


def test_a_unix_bind_never_replaces_a_file_that_is_not_a_socket(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    result = wizgy("-b", f"unix:{precious}", "testapp:app")
    assert result.returncode == 2
    assert f"cannot bind unix:{precious}: {precious} exists and is not a socket" \
        in result.stderr
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize("model", ["evloop", "threaded"])
def test_bind_to_an_inherited_listening_socket(tmp_path, model):
    # fd://N: a socket bound by whoever started the server (systemd socket
    # activation, a supervisor); the server serves on it, and never unlinks its file.
    path = tmp_path / "activated.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        fd = listener.fileno()
        with run_wizgy("-k", model, "-b", f"fd://{fd}", "-b", "127.0.0.1:0", "testapp:app",
                       bind=False, pass_fds=(fd,)) as srv:
            srv.wait_for_output(rf"Listening at: unix:{path} ")
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(5)
                client.connect(str(path))
                client.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := client.recv(4096):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200 ") and b"Hello, World!\n" in data
    assert path.exists()  # ours to remove, not the server's


def test_a_bound_but_not_listening_socket_is_refused():
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        fd = bound.fileno()
        result = subprocess.run(
            [SERVER_PYTHON, "-m", "wizgy", "-b", f"fd://{fd}", "testapp:app"],
            capture_output=True, text=True, pass_fds=(fd,), timeout=20, cwd=TEST_APPS,
            env={**os.environ, "PYTHONPATH": f"{SERVER}:{TEST_APPS}"})
    assert result.returncode == 2
    assert f"cannot bind fd://{fd}: not a listening stream socket" in result.stderr


def test_log_level_is_case_insensitive():
    result = wizgy("--log-level", "WARNING", "--print-config", "testapp:app")
    assert result.returncode == 0 and "log_level                  = 'warning'" in result.stdout
    result = wizgy("--print-config", "testapp:app", env={"WIZGY_LOG_LEVEL": "Debug"})
    assert result.returncode == 0 and "log_level                  = 'debug'" in result.stdout


def test_prefork_settings_on_a_one_process_model_are_said_to_be_ignored():
    with run_wizgy("-k", "threaded", "-w", "3", "--reload", "testapp:app") as srv:
        srv.wait_for_output(r"-k threaded is one process: --workers 3 and --reload "
                            r"are for the prefork models, and ignored")
    with run_wizgy("-k", "iterative", "--max-requests", "9", "testapp:app") as srv:
        srv.wait_for_output(r"-k iterative is one process: --max-requests 9 "
                            r"is for the prefork models, and ignored")
    with run_wizgy("-k", "prefork", "-w", "2", "--max-requests", "5", "testapp:app") as srv:
        srv.wait_for_output(r"Booting worker")
    assert "is one process" not in srv.final_output


def test_unknown_option_is_exit_2():
    result = wizgy("--no-such-option", "testapp:app")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_print_config_shows_env_and_flags():
    result = wizgy("--print-config", "-w", "3", "testapp:app",
                   env={"WIZGY_KEEP_ALIVE": "7", "WIZGY_BIND": "127.0.0.1:1,127.0.0.1:2"})
    assert result.returncode == 0
    lines = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert lines["workers".ljust(26)] == "3"
    assert lines["keep_alive".ljust(26)] == "7.0"
    assert lines["bind".ljust(26)] == "('127.0.0.1:1', '127.0.0.1:2')"
    assert lines["app".ljust(26)] == "'testapp:app'"


def test_flag_beats_environment_and_web_concurrency_works():
    settings = config.parse(["-w", "2", "x:y"], {"WIZGY_WORKERS": "5"})
    assert settings.workers == 2
    assert config.parse(["x:y"], {"WEB_CONCURRENCY": "4"}).workers == 4
    assert config.parse([], {"WIZGY_APP": "a:b"}).app == "a:b"
    with pytest.raises(config.ConfigError, match="WIZGY_TIMEOUT"):
        config.parse(["x:y"], {"WIZGY_TIMEOUT": "soon"})


def test_gunicorn_flag_names_are_accepted():
    settings = config.parse(["--limit-request-field_size", "100", "-k", "sync", "-t", "5",
                             "--graceful-timeout", "3", "--access-logfile", "-", "x:y"], {})
    assert settings.limit_request_field_size == 100 and settings.main_model == "prefork"
    assert settings.timeout == 5 and settings.graceful_timeout == 3


def test_every_setting_has_an_env_var_and_help():
    result = wizgy("--help")
    assert result.returncode == 0
    for f in config.fields(config.Settings):
        assert f"WIZGY_{f.name.upper()}" in result.stdout


def test_readme_option_table_is_generated_from_settings():
    readme = (REPO / "README.md").read_text()
    assert config.markdown_table() in readme, \
        "README's option table is stale: paste `python -m wizgy.config` output into it"


def test_app_from_env_and_access_log(tmp_path):
    log = tmp_path / "access.log"
    with run_wizgy("--access-logfile", str(log), env={"WIZGY_APP": "testapp:app"}) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe\r\n"
                         b"Connection: close\r\n\r\n")
            while sock.recv(4096):
                pass
    line = log.read_text().strip()
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /hello?x=1 HTTP/1.1" 200 14 "-" "probe"' in line


@pytest.mark.parametrize("model", ["evloop", "threaded", "iterative"])
def test_a_request_the_app_fails_is_in_the_access_log(tmp_path, model):
    log = tmp_path / "access.log"
    with run_wizgy("-k", model, "--access-logfile", str(log), "testapp:app") as srv:
        for path in (b"/error", b"/hello"):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path)
                while sock.recv(4096):
                    pass
    lines = log.read_text().splitlines()
    assert ['"GET /error HTTP/1.1" 500' in lines[0], '"GET /hello HTTP/1.1" 200' in lines[1]] \
        == [True, True], lines


def test_access_log_in_gunicorn_atoms(tmp_path):
    log = tmp_path / "access.log"
    fmt = '%(h)s %(u)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %({x-request-id}i)s %(p)s %(D)s'
    with run_wizgy("--access-logfile", str(log), "--access-logformat", fmt,
                   "testapp:app") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: r-42\r\n"
                         b"Authorization: Basic YW5uOnNlY3JldA==\r\n"  # ann:secret
                         b"Connection: close\r\n\r\n")
            while sock.recv(4096):
                pass
    line = log.read_text().strip()
    head, pid, micros = line.rsplit(" ", 2)
    assert head == '127.0.0.1 ann "GET /hello?x=1 HTTP/1.1" 200 14 GET /hello x=1 r-42'
    assert pid.startswith("<") and micros.isdigit() and "secret" not in line


@pytest.mark.parametrize("fmt", ["%(h)d", "%(h)s %"])
def test_bad_access_log_format_is_one_line_and_exit_2(fmt):
    result = wizgy("--access-logformat", fmt, "testapp:app")
    assert result.returncode == 2
    assert result.stderr.startswith("wizgy: error: --access-logformat: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_chdir_and_pythonpath():
    with run_wizgy("--chdir", str(APPS), "--pythonpath", str(TEST_APPS), "testapp:app",
                   env={"PYTHONPATH": str(SERVER)}) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")


def test_pid_file_holds_the_main_pid_and_goes_at_exit(tmp_path):
    pidfile = tmp_path / "wizgy.pid"
    with run_wizgy("--pid", str(pidfile), "testapp:app") as srv:
        assert pidfile.read_text() == f"{srv.pid}\n"
        os.kill(int(pidfile.read_text()), signal.SIGTTIN)  # what operators do with it
        srv.wait_for_output("Booting worker")
        assert srv.stop() == 0
    assert not pidfile.exists()


def test_pid_file_of_a_running_server_refuses_a_second(tmp_path):
    pidfile = tmp_path / "wizgy.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test runner: alive
    result = wizgy("--pid", str(pidfile), "-b", "127.0.0.1:0", "testapp:app")
    assert result.returncode == 2
    assert f"--pid {pidfile}: already running on PID {os.getpid()}" in result.stderr
    assert pidfile.read_text() == f"{os.getpid()}\n"


def test_a_stale_pid_file_is_replaced(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "wizgy.pid"
    pidfile.write_text(f"{dead.pid}\n")
    with run_wizgy("--pid", str(pidfile), "testapp:app") as srv:
        assert pidfile.read_text() == f"{srv.pid}\n"


SLOW_START = """
import os, time
open(os.environ["STARTED_AT"], "w").close()  # main() has its handlers by now
time.sleep(60)  # an app that takes its time to import (Django with a slow database)
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"late"]
"""


# An app whose import lasts until the test lets it go on (a file next to STARTED_AT).
HELD_START = """
import os, time
open(os.environ["STARTED_AT"], "w").close()
for _ in range(3000):  # 60 s at most
    if os.path.exists(os.environ["STARTED_AT"] + ".go"):
        break
    time.sleep(0.02)
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"served"]
"""


@pytest.mark.parametrize("model", ["threaded", "prefork"])
def test_hup_usr1_ttin_while_the_app_imports_wait_for_the_model(tmp_path, model):
    # Sent before the model's handlers are in (a logrotate's USR1, a deploy's HUP or
    # TTIN as the server starts), their default actions used to end the start (HUP,
    # USR1: exit -1, -10) or stop the process (TTIN: state T, nobody served). Now main()
    # holds them, and the model acts on each once its handlers are in.
    (tmp_path / "heldstart.py").write_text(HELD_START)
    started_at, log = tmp_path / "started", tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [SERVER_PYTHON, "-m", "wizgy", "-b", "127.0.0.1:0", "-k", model, "-w", "1",
             "--pythonpath", str(tmp_path), "heldstart:app"],
            env={**os.environ, "PYTHONPATH": str(SERVER), "STARTED_AT": str(started_at)},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(started_at.exists, 30, "the app's import to begin")
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN):
            proc.send_signal(signum)
        (tmp_path / "started.go").touch()

        def listening():
            assert proc.poll() is None, (proc.returncode, log.read_text())
            return re.search(r"Listening at: http://127.0.0.1:(\d+)", log.read_text())
        port = int(wait_for(listening, 30, "listening").group(1))
        for name in ("hup", "usr1", "ttin"):
            wait_for(lambda: f"Handling signal: {name}" in log.read_text(), 10, name)
        if model == "prefork":  # the reload's new worker, and one more: 2 (without
            def booted():  # TTIN, 1; the old one stays a while beside the new ones)
                return re.findall(r"Booting worker with pid (\d+)", log.read_text())
            wait_for(lambda: len(booted()) == 3 and
                     set(children_of(proc.pid)) == set(map(int, booted()[1:])), 15,
                     "the first worker retired, 2 of the reload's in its place")
        else:
            assert "Handling signal: usr1: reopened the log files" in log.read_text()
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock)[2] == b"served"
        assert proc.poll() is None and proc_state(proc.pid) != "T"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


# The same, its slow part in source the module exec()s, as dataclasses and
# namedtuple build their methods (Flask, Werkzeug and Django import dozens of those).
SLOW_START_IN_EXEC = f"exec({SLOW_START!r})\n"


def start_slowly(tmp_path, prefix=(), source=SLOW_START):
    """wizgy on an app whose import takes a minute; returned once the import began."""
    (tmp_path / "slowstart.py").write_text(source)
    started_at = tmp_path / "started"
    proc = subprocess.Popen(
        [*prefix, SERVER_PYTHON, "-m", "wizgy", "-b", "127.0.0.1:0", "--pythonpath",
         str(tmp_path), "--pid", str(tmp_path / "pid"), "slowstart:app"],
        env={**os.environ, "PYTHONPATH": str(SERVER), "STARTED_AT": str(started_at)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        wait_for(started_at.exists, 30, "the app's import to begin")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc


def stopped(proc, timeout=10):
    """(exit status, stderr) of a server asked to stop; killed if it would not."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return "still running after a stop signal", err
    return proc.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_a_stop_signal_while_the_app_imports_stops_the_start(tmp_path, signum):
    # Before the model's own handlers are in, a stop signal ends the start there and
    # then, with one line and status 0: not killed mid-import by TERM's default
    # action, not a KeyboardInterrupt traceback for INT, not a core dump for QUIT.
    proc = start_slowly(tmp_path)
    proc.send_signal(signum)
    code, err = stopped(proc)
    assert code == 0, (code, err)
    assert err == "wizgy: stopped while starting: a stop signal came before the server " \
                  "served\n", err


def test_a_stop_signal_inside_exec_source_while_the_app_imports_still_exits_0(tmp_path):
    # CPython marks a KeyboardInterrupt leaving exec()'d source as unhandled, and its
    # interpreter then ends by SIGINT (status 130; -2 here) after main() returned 0,
    # if that is the exception the stop signal raised (~3% of stops during Flask's
    # import landed in a dataclass's exec).
    proc = start_slowly(tmp_path, source=SLOW_START_IN_EXEC)
    proc.send_signal(signal.SIGTERM)
    code, err = stopped(proc)
    assert code == 0, (code, err)
    assert err == "wizgy: stopped while starting: a stop signal came before the server " \
                  "served\n", err


# The stop signal arrives while fork() makes the status process: sent from the
# interpreter's after-fork hook in the parent, where Python code runs inside os.fork().
STOP_DURING_FORK = """
import os, signal
def stop_once():
    if not stop_once.done:  # the first fork: the status process's
        stop_once.done = True
        os.kill(os.getpid(), signal.{name})
stop_once.done = False
os.register_at_fork(after_in_parent=stop_once)
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"served"]
"""


def session_processes(sid: int) -> list[str]:
    """The processes of session SID (a server started with start_new_session)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read() if entry.isdigit() else ""
        except OSError:
            continue  # gone meanwhile
        if stat and int(stat.rsplit(")", 1)[1].split()[3]) == sid:
            found.append(stat)
    return found


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_while_the_status_process_forks_stops_the_start(tmp_path, name):
    # A TERM there ran its handler inside the after-fork hooks, whose exceptions Python
    # reports and drops: the stop was lost and the server served. An INT (held back
    # over fork()) raised before the server knew the status process's PID, which was
    # left running once the server had gone.
    (tmp_path / "stopatfork.py").write_text(STOP_DURING_FORK.format(name=name))
    proc = subprocess.Popen(
        [SERVER_PYTHON, "-m", "wizgy", "-k", "iterative", "-b", "127.0.0.1:0",
         "--status-bind", "127.0.0.1:0", "--pythonpath", str(tmp_path), "stopatfork:app"],
        env={**os.environ, "PYTHONPATH": str(SERVER)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    code, err = stopped(proc)
    left = session_processes(proc.pid)
    for stat in left:
        os.kill(int(stat.split()[0]), signal.SIGKILL)
    assert code == 0, (code, err)
    assert "Stopped while starting: a stop signal came before the server served" in err, err
    assert left == [], left


# The stop signal arrives in a __del__, whose exceptions Python reports and drops (as
# it does in weakref callbacks: importlib's module locks have those).
STOP_IN_DEL = """
import os, signal
class Stopper:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at one of these steps
            pass
Stopper()
import gc
gc.collect()  # PyPy runs a __del__ at a collection, not when the last reference goes
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"served"]
"""


def test_a_stop_signal_whose_exception_is_dropped_still_stops_the_start(tmp_path):
    (tmp_path / "stopindel.py").write_text(STOP_IN_DEL)
    proc = subprocess.Popen(
        [SERVER_PYTHON, "-m", "wizgy", "-b", "127.0.0.1:0", "--pythonpath", str(tmp_path),
         "stopindel:app"],
        env={**os.environ, "PYTHONPATH": str(SERVER)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    code, err = stopped(proc)
    assert code == 0, (code, err)
    assert "Stopped while starting: a stop signal came before the server served" in err, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_storm_of_stop_signals_while_starting_still_exits_0(tmp_path, signum):
    # The first one stops the start; those after it used to cut the cleanup short: a
    # KeyboardInterrupt traceback, the pid file left, or the interpreter killed by a
    # TERM once it had put the default action back on its way out.
    proc = start_slowly(tmp_path)
    for _ in range(20000):  # until it has exited: a few milliseconds
        if proc.poll() is not None:
            break
        proc.send_signal(signum)
    code, err = stopped(proc)
    assert code == 0, (code, err)
    assert err == "wizgy: stopped while starting: a stop signal came before the server " \
                  "served\n", err
    assert not (tmp_path / "pid").exists()


def test_as_pid_1_a_stop_signal_while_starting_is_not_lost(tmp_path):
    # A plain `docker run` makes wizgy the init of its PID namespace, and the kernel
    # drops a signal such an init has no handler for: TERM arriving while the app
    # imports was lost, and `docker stop` waited out its timeout, then killed. Here the
    # namespace comes from unshare(1) (as root, or in a user namespace of our own).
    prefix = ["unshare", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        skip_or_fail("needs a PID namespace from unshare(1): run as root, or allow "
                     "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)")
    proc = start_slowly(tmp_path, prefix)
    (server,) = children_of(proc.pid)  # wizgy, PID 1 inside, as the host sees it
    assert open(f"/proc/{server}/status").read().count("\nNSpid:\t%d\t1\n" % server) == 1
    os.kill(server, signal.SIGTERM)  # as docker stop does, from outside the namespace
    code, err = stopped(proc)
    assert code == 0, (code, err)
    assert "wizgy: stopped while starting" in err, err


GUNICORN_CONF = '''\
import multiprocessing

bind = "127.0.0.1:0"
wsgi_app = "testapp:app"
workers = 2
worker_class = "gthread"
keepalive = 7
accesslog = "-"
loglevel = "INFO"
max_requests = 100
workerz = 3

def post_fork(server, worker):
    pass
'''


def test_config_file_takes_gunicorn_names_and_says_what_it_ignores(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    result = wizgy("-c", str(conf), "--print-config")
    assert result.returncode == 0, result.stderr
    shown = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    shown = {name.strip(): value for name, value in shown.items()}
    assert shown["bind"] == "('127.0.0.1:0',)" and shown["app"] == "'testapp:app'"
    assert (shown["workers"], shown["model"], shown["keep_alive"]) == ("2", "'gthread'", "7.0")
    assert (shown["access_logfile"], shown["log_level"], shown["max_requests"]) == \
        ("'-'", "'info'", "100")
    assert f"{conf}: workerz is not a setting; ignored" in result.stderr
    assert f"{conf}: post_fork is not a setting; ignored" in result.stderr
    assert "multiprocessing" not in result.stderr


def test_precedence_command_line_cmd_args_env_file(tmp_path):
    conf = tmp_path / "wizgy.conf.py"
    conf.write_text("workers = 2\nthreads = 2\nbacklog = 10\ntimeout = 9\n")
    env = {"WIZGY_CONFIG": str(conf), "WIZGY_THREADS": "3", "WIZGY_BACKLOG": "11",
           "WIZGY_CMD_ARGS": "--backlog 12 --timeout 8 testapp:app"}
    settings = config.parse(["--timeout", "7"], env)
    assert (settings.workers, settings.threads, settings.backlog, settings.timeout) == \
        (2, 3, 12, 7)
    assert settings.app == "testapp:app"


@pytest.mark.parametrize("text,message", [
    ("workers = 0\n", ": workers: must be 1 or more"),
    ("worker_class = 'gevent'\n", ": model: 'gevent' is not one of"),
    ("workers = (\n", ": SyntaxError:"),
])
def test_bad_config_file_is_one_line_and_exit_2(tmp_path, text, message):
    conf = tmp_path / "bad.conf.py"
    conf.write_text(text)
    result = wizgy("-c", str(conf), "testapp:app")
    assert result.returncode == 2, result
    assert message in result.stderr and str(conf) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unknown_option_in_cmd_args_is_exit_2():
    result = wizgy("testapp:app", env={"WIZGY_CMD_ARGS": "--wrokers 2"})
    assert result.returncode == 2
    assert "WIZGY_CMD_ARGS: unrecognized arguments: --wrokers" in result.stderr


def test_server_runs_from_a_config_file_alone(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    with run_wizgy("-c", str(conf), bind=False) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\ne\r\nHello, World!\n\r\n" in data
        assert "Using model: gthread" in srv.output()


def test_pypy_jit_parameters_are_checked_on_every_runtime():
    assert config.parse(["x:y"]).pypy_jit == ""  # PyPy's own defaults
    assert config.parse(["--pypy-jit", "trace_limit=16384,threshold=500", "x:y"]).pypy_jit \
        == "trace_limit=16384,threshold=500"
    assert config.parse(["x:y"], {"WIZGY_PYPY_JIT": "threshold=500"}).pypy_jit == "threshold=500"
    for bad in ("nosuch=1", "trace_limit", "trace_limit=many"):
        result = wizgy("--pypy-jit", bad, "testapp:app")
        assert result.returncode == 2, result
        assert result.stderr.startswith("wizgy: error: --pypy-jit: "), result.stderr


def test_pypy_gc_parameters_are_checked_on_every_runtime():
    assert config.parse(["x:y"]).pypy_gc == "nursery=4M,increment_step=256K"  # wizgy's
    assert config.parse(["--pypy-gc", "off", "x:y"]).pypy_gc == "off"  # PyPy's own
    assert config.parse(["x:y"], {"WIZGY_PYPY_GC": "off"}).pypy_gc == "off"
    assert config.parse(["--pypy-gc", "nursery=4MB,major_collect=1.82", "x:y"]).pypy_gc \
        == "nursery=4MB,major_collect=1.82"
    assert config.parse(["x:y"], {"WIZGY_PYPY_GC": "increment_step=1M"}).pypy_gc \
        == "increment_step=1M"
    for bad in ("nosuch=1", "nursery", "nursery=lots", "nursery=4M;rm"):
        result = wizgy("--pypy-gc", bad, "testapp:app")
        assert result.returncode == 2, result
        assert result.stderr.startswith("wizgy: error: --pypy-gc: "), result.stderr


@pytest.mark.parametrize("args, env, expected", [
    ((), {}, "256K"),  # the default, put in place by an exec
    (("--pypy-gc", "increment_step=512K"), {}, "512K"),
    ((), {"PYPY_GC_INCREMENT_STEP": "1M"}, "1M"),  # one the environment sets wins
    (("--pypy-gc", "off"), {}, None),  # PyPy's own: no exec, nothing set
    ((), {"WIZGY_PYPY_GC": "off"}, None),
])
def test_pypy_gc_parameters_start_pypy_in_place_and_cpython_ignores_them(args, env, expected):
    # PyPy reads PYPY_GC_* once, at startup: wizgy sets them and execs itself, keeping
    # its PID (what a supervisor or a pidfile knows). The worker, forked from that
    # master, serves with the environment PyPy started with. CPython has no such
    # collector.
    pypy = server_implementation() == "PyPy"
    with run_wizgy("-w", "1", *args, "testapp:app", env=env) as srv:
        listening = srv.wait_for_output(r"Listening at: \S+ \((\d+)\)")
        assert int(listening.group(1)) == srv.pid  # the same process, before and after
        with connect(srv.port) as sock:
            sock.sendall(b"GET /getenv?name=PYPY_GC_INCREMENT_STEP HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = read_response(sock)
        assert status == 200
        got = None if body == b"-\n" else body.decode().strip()
        if pypy:
            assert got == expected
            shown = f"PYPY_GC_INCREMENT_STEP={expected}" if expected else "PyPy's defaults"
            srv.wait_for_output(f"PyPy's collector: {shown}")
        else:
            assert got == env.get("PYPY_GC_INCREMENT_STEP")  # nothing set, no exec
            assert "PyPy's collector" not in srv.output()


def test_pypy_jit_parameters_reach_pypy_and_cpython_ignores_them():
    # A trace_limit above what PyPy allows: pypyjit.set_param() refuses it, which shows
    # the setting is applied there; CPython has no JIT and serves as usual.
    if server_implementation() == "PyPy":
        result = wizgy("--pypy-jit", "trace_limit=99999", "-b", "127.0.0.1:0", "testapp:app")
        assert result.returncode == 2, result
        assert "wizgy: error: --pypy-jit trace_limit=99999: " in result.stderr
    else:
        with run_wizgy("-k", "iterative", "--pypy-jit", "trace_limit=99999",
                       "testapp:app") as srv:
            srv.wait_for_output(r"Listening at")
