"""`wizgy [OPTIONS] MODULE:CALLABLE`: read settings, load the app, bind, run a model.

Everything that can be wrong with the configuration is found here, before any
process is forked, and reported as one line with exit status 2.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import stat
import sys

from . import config, models, proctitle, status
from .config import ConfigError, Settings
from .context import ServerContext
from .log import Logs
from .models import lessons
from .scoreboard import Scoreboard
from .starting import (STARTING_SIGNALS, STOPPED_LINE, StoppedWhileStarting, hold_stop_signals,
                       resend_held_signals)
from .starting import install as install_starting_signals


def shape(settings) -> str:
    """How many processes and threads serve, as the startup line says it."""
    threads = settings.worker_threads if settings.main_model == "prefork" else \
        settings.threads if settings.model == "threaded" else 1
    parts = [f"{settings.workers} workers"] if settings.main_model == "prefork" else []
    if threads > 1:
        parts.append(f"{threads} threads" + (" each" if parts else ""))
    return f", {' x '.join(parts)}" if parts else ""


def tune_jit(params: str) -> None:
    """On PyPy, set --pypy-jit's parameters before the app is imported and any worker
    forked (workers inherit them). Nothing on CPython."""
    try:
        import pypyjit
    except ImportError:
        return
    if params:
        try:
            pypyjit.set_param(params)
        except Exception as error:  # noqa: BLE001 (e.g. a trace_limit above what PyPy allows)
            raise ConfigError(f"--pypy-jit {params}: {error}") from None


def tune_gc(params: str, program: bool) -> None:
    """On PyPy, put --pypy-gc's parameters in the environment as PYPY_GC_* and exec this
    same command again (same PID, same descriptors), so that the collector starts with
    them: PyPy reads them once, at startup. A variable already set is left as it is,
    which also ends the loop: after the exec every one is set. Only when wizgy is the
    program (`python -m wizgy`, the `wizgy` script); nothing on CPython."""
    if sys.implementation.name != "pypy" or not program or params == "off":
        return
    pairs = config.pypy_params(params, config.GC_PARAMS, "collector", lambda *_: True, "")
    wanted = {f"PYPY_GC_{name.upper()}": value for name, value in pairs}
    missing = {name: value for name, value in wanted.items() if name not in os.environ}
    if missing:
        os.environ.update(missing)
        sys.stdout.flush()
        sys.stderr.flush()
        original = getattr(sys, "orig_argv", None)  # 3.10+: with the interpreter's flags
        command = original[1:] if original else ["-m", "wizgy", *sys.argv[1:]]
        # A signal during the exec waits, pending (the mask and pending signals survive
        # execve; the handlers do not), until main() has its handlers again.
        signal.pthread_sigmask(signal.SIG_BLOCK, STARTING_SIGNALS)
        resend_held_signals()
        try:
            os.execv(sys.executable, [sys.executable, *command])
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STARTING_SIGNALS)
            raise ConfigError(f"--pypy-gc: cannot start {sys.executable} again: "
                              f"{error.strerror or error}") from None


def collector() -> str:
    """The PYPY_GC_* settings this process started with, for the startup log."""
    return ", ".join(f"{name}={value}" for name, value in sorted(os.environ.items())
                     if name.startswith("PYPY_GC_")) or "PyPy's defaults"


def main(argv: list[str] | None = None) -> int:
    program = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["top"]:  # `wizgy top [--url URL]`: the status endpoint, live
        from . import top
        return top.main(argv[1:])
    pidfile = None
    try:
        if program:  # (again: __main__ did first) until the model's own handlers,
            install_starting_signals()  # a stop signal stops the start, a HUP waits
        settings = config.parse(argv)
        if settings.print_config:
            print(config.describe(settings))
            return 0
        tune_gc(settings.pypy_gc, program)
        tune_jit(settings.pypy_jit)
        try:
            logs = Logs(settings.error_logfile, settings.access_logfile, settings.log_level,
                        settings.access_logformat)
        except OSError as error:
            raise ConfigError(f"cannot open log file {error.filename}: "
                              f"{error.strerror or error}") from None
        except ValueError as error:
            raise ConfigError(f"--access-logformat: {error}") from None
        if settings.lesson and settings.main_model != "fork":
            raise ConfigError(f"--lesson {settings.lesson} needs the fork model (-k fork), "
                              f"not -k {settings.model}")
        app = load_app(settings)
        listeners = [bind(address, settings.backlog) for address in settings.bind]
        status_listener = bind(settings.status_bind, settings.backlog) \
            if settings.status_bind else None
        if settings.pid:  # named first: a stop signal inside write_pidfile() still has it
            pidfile = settings.pid  # removed (remove_pidfile: only if it holds our PID)
            write_pidfile(pidfile)
    except ConfigError as error:
        print(f"wizgy: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # (a unix socket file bound by now stays: bind() replaces it)
        if program:
            hold_stop_signals()
        if pidfile:
            remove_pidfile(pidfile)
        print(STOPPED_LINE, file=sys.stderr)
        return 0
    ctx, ours = None, []  # ours: socket files to remove at exit (we bound; not fd://)
    try:
        model_cls = lessons.get(settings.lesson) if settings.lesson else \
            models.get(settings.main_model)
        multithread, multiprocess = model_cls.flags(settings)
        board = Scoreboard(model_cls.slots(settings))
        ctx = ServerContext(app, settings, logs, multithread=multithread,
                            multiprocess=multiprocess, board=board)
        ctx.stats = board.stats(board.claim())  # this process's own slot
        ctx.stats.pid = os.getpid()
        bound = zip([*listeners, status_listener], [*settings.bind, settings.status_bind])
        ours = unix_socket_files([listener for listener, address in bound
                                  if listener is not None and not address.startswith("fd://")])
        log_start(logs.error, settings, listeners)
        status.start(ctx, status_listener, listeners)  # sets ctx.status_pid and ctx.event
        role = status.MAIN_ROLE.get(settings.main_model, "server")
        proctitle.set_title(role, settings.model if role == "master" else
                            proctitle.describe(settings))
        if program and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
            # A stop signal came, and something dropped its exception (a __del__ or
            # weakref callback it ran in: Python only prints those)
            raise StoppedWhileStarting
        code = model_cls(ctx, listeners).run()
    except KeyboardInterrupt:  # a stop signal before the model's handlers were in
        logs.error.info("Stopped while starting: a stop signal came before the server served")
        code = 0
    if program:  # stopping now: a stop signal more would only cut the cleanup short
        hold_stop_signals()
    if ctx is not None:
        status.stop(ctx)
    remove_socket_files(ours)
    if pidfile:
        remove_pidfile(pidfile)
    logs.error.info("Shutting down: %s", "done" if code == 0 else f"exit status {code}")
    return code


def log_start(log, settings: Settings, listeners: list) -> None:
    """The startup lines: where, which model, PyPy's collector, flags left unused."""
    for listener in listeners:
        log.info("Listening at: %s (%s)", url_of(listener), os.getpid())
    log.info("Using model: %s%s%s", settings.model,
             f" (lesson: {settings.lesson})" if settings.lesson else "", shape(settings))
    if sys.implementation.name == "pypy":
        log.info("PyPy's collector: %s", collector())
    ignored = [flag for flag, given in (
        (f"--workers {settings.workers}", settings.workers > 1),
        (f"--max-requests {settings.max_requests}", settings.max_requests),
        ("--reload", settings.reload)) if given]
    if settings.main_model != "prefork" and ignored:
        log.info("-k %s is one process: %s %s for the prefork models, and ignored",
                 settings.model, " and ".join(ignored), "are" if len(ignored) > 1 else "is")


def load_app(settings: Settings):
    """Import MODULE:CALLABLE (default callable: `application`)."""
    spec = settings.app
    if not spec:
        raise ConfigError("no application given: pass MODULE:CALLABLE or set WIZGY_APP")
    if settings.chdir:
        try:
            os.chdir(settings.chdir)
        except OSError as error:
            raise ConfigError(f"--chdir {settings.chdir}: {error.strerror}") from None
    paths = [p for p in (settings.pythonpath or "").split(",") if p]
    sys.path[:0] = [os.path.abspath(p) for p in paths] + [os.getcwd()]
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "application"
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError(
            f"cannot import module {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(app):
        raise ConfigError(f"{spec} is not callable (it is a {type(app).__name__})")
    return app


def write_pidfile(path: str) -> str:
    """--pid FILE: our PID in FILE, unless it names a process that is still running
    (a second server started by mistake); a stale one (its process gone) is replaced."""
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except FileNotFoundError:
        old = 0
    except ValueError:
        old = 0  # not a PID: ours to replace
    except OSError as error:
        raise ConfigError(f"--pid {path}: {error.strerror or error}") from None
    if old and old != os.getpid():
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            pass  # stale
        except PermissionError:
            raise ConfigError(f"--pid {path}: already running on PID {old}") from None
        else:
            raise ConfigError(f"--pid {path}: already running on PID {old} "
                              "(or the file is stale and the PID reused)")
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as error:
        raise ConfigError(f"--pid {path}: {error.strerror or error}") from None
    return path


def remove_pidfile(path: str) -> None:
    """Remove the PID file if it still holds our PID (not a newer server's)."""
    try:
        with open(path) as f:
            if int(f.read().strip()) == os.getpid():
                os.unlink(path)
    except (OSError, ValueError):
        pass


def unix_socket_files(listeners) -> list[tuple[str, int]]:
    """(path, inode) of each unix socket we bound, to remove at exit."""
    return [(sock.getsockname(), os.stat(sock.getsockname()).st_ino)
            for sock in listeners if sock is not None and sock.family == socket.AF_UNIX]


def remove_socket_files(files: list[tuple[str, int]]) -> None:
    """Remove our socket files, not one a newer server has bound at the same path."""
    for path, inode in files:
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except OSError:
            pass  # gone already


def bind(address: str, backlog: int) -> socket.socket:
    """A listening socket for HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N."""
    if address.startswith("fd://"):
        return inherited(address)
    if address.startswith("unix:"):
        path = address[5:]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise ConfigError(f"cannot bind {address}: {path} exists and is not a socket")
            os.unlink(path)  # a stale socket file from an earlier run
        target = path
    else:
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target = (host, port)
    try:
        sock.bind(target)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot bind {address}: {error.strerror or error}") from None
    sock.set_inheritable(False)
    return sock


def inherited(address: str) -> socket.socket:
    """fd://N, as gunicorn's: a listening socket this process was started with (by
    systemd, a supervisor, a test), already bound; never ours to unlink."""
    number = address[5:]
    if not number.isdigit():
        raise ConfigError(f"cannot bind {address}: expected fd://NUMBER")
    try:
        sock = socket.socket(fileno=int(number))
    except OSError as error:
        raise ConfigError(f"cannot bind {address}: {error.strerror or error}") from None
    if sock.type != socket.SOCK_STREAM or \
            not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()  # not ours to close either
        raise ConfigError(f"cannot bind {address}: not a listening stream socket")
    sock.set_inheritable(False)
    return sock


def parse_address(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or "]" in host:
        raise ConfigError(f"cannot parse bind address {address!r}: expected HOST:PORT, "
                          "[IPv6]:PORT or unix:PATH")
    return host or "0.0.0.0", int(port)


def url_of(listener: socket.socket) -> str:
    if listener.family == socket.AF_UNIX:
        return f"unix:{listener.getsockname()}"
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if listener.family == socket.AF_INET6 else \
        f"http://{host}:{port}"
