"""Settings: every option defined once, with its flag, env var, default, check and help.

`Settings` is a frozen dataclass; each field's metadata holds the rest. The command
line (`wizgy --help`), the environment (`WIZGY_<NAME>`), `--print-config` and the
README's option table are all generated from it. Flag names follow gunicorn's where
gunicorn has the option, so operators feel at home.

Precedence: the command line, then WIZGY_CMD_ARGS (more command-line options, as
gunicorn's GUNICORN_CMD_ARGS), then WIZGY_<NAME>, then the --config file (Python, as
gunicorn.conf.py), then the default.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import sys
import types
from dataclasses import dataclass, field, fields

MODELS = ("iterative", "threaded", "evloop", "fork", "prefork", "sync", "gthread")
LESSONS = ("keep-duplicate-fds", "no-reap", "reap-once")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """Bad configuration: printed as one line, exit status 2."""


def non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, not {number}")
    return number


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be 1 or more, not {number}")
    return number


def seconds(value: str) -> float:
    number = float(value)
    if not 0 <= number < 1e9:  # (also refuses nan and inf)
        raise ValueError(f"must be 0 or more seconds (and finite), not {value}")
    return number


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


# PyPy's JIT parameters (`pypy --jit help`). wizgy leaves them at PyPy's defaults: a
# longer trace (trace_limit=16384) halves the pieces a request is compiled into, but
# measured whole it did not pay yet (server/docs/pypy-jit.md).
JIT_PARAMS = frozenset((
    "decay", "disable_unrolling", "enable_opts", "function_threshold", "inlining",
    "loop_longevity", "max_retrace_guards", "max_unroll_loops", "max_unroll_recursion",
    "pureop_historylength", "retrace_limit", "threshold", "trace_eagerness", "trace_limit",
    "vec", "vec_all", "vec_cost"))


def pypy_params(value: str, known: frozenset, what: str, valid, expected: str) -> list:
    """Check `PARAM=VALUE,...` for one of PyPy's parameter sets, on every runtime (they
    are applied on PyPy only); the (name, value) pairs."""
    pairs = []
    for item in filter(None, value.split(",")):
        name, equals, setting = item.partition("=")
        if name not in known or not equals:
            raise ValueError(f"expected PARAM=VALUE with PARAM one of PyPy's {what} "
                             f"parameters ({', '.join(sorted(known))}), not {item!r}")
        if not valid(name, setting):
            raise ValueError(f"{name} takes {expected}, not {setting!r}")
        pairs.append((name, setting))
    return pairs


def jit_params(value: str) -> str:
    """`PARAM=N,...` of PyPy's JIT."""
    pypy_params(value, JIT_PARAMS, "JIT", lambda name, n: name == "enable_opts" or n.isdigit(),
                "a whole number")
    return value


# PyPy's collector (incminimark) reads its parameters from PYPY_GC_* variables once,
# when the interpreter starts. Two wizgy sets by default:
# - nursery, where new objects go until a minor collection. PyPy sizes it from
#   /proc/cpuinfo's "cache size", half of it: the last-level cache on Intel, so a
#   worker's nursery is 1 MB on one host and 240 MB on another (a 480 MB L3 reported
#   in a VM), and its RSS with it. 4M (PyPy's own fallback in later releases) served
#   faster here than either (server/docs/pypy-jit.md, "The nursery");
# - increment_step, how much a major collection marks per step. PyPy's default (twice
#   the nursery) made steps of 3-4 ms here, during which every connection of the
#   worker waits; at 256K they take 0.3-0.5 ms and hello's p99 at 64 connections
#   halved, with the same collector time per request (pypy-jit.md, "The collector's
#   steps").
GC_PARAMS = frozenset((
    "nursery", "nursery_cleanup", "increment_step", "major_collect", "growth", "min", "max",
    "max_delta", "max_pinned"))
GC_VALUE = re.compile(r"[0-9]+(\.[0-9]+)?([kKmMgG][bB]?)?")  # 256K, 4MB, 1.82, 1.6GB


def gc_params(value: str) -> str:
    """`PARAM=VALUE,...` of PyPy's collector, or `off`."""
    if value != "off":
        pypy_params(value, GC_PARAMS, "collector", lambda name, v: GC_VALUE.fullmatch(v),
                    "a size or a number (256K, 4MB, 1.82)")
    return value


def option(*flags: str, help: str, type=str, choices=None, repeat=False, env: tuple = (),
           metavar: str | None = None, flag_only=False):
    """Field metadata for one setting. `env` lists extra variables besides WIZGY_<NAME>."""
    return {"flags": flags, "help": help, "type": type, "choices": choices, "repeat": repeat,
            "env": env, "metavar": metavar, "flag_only": flag_only}


@dataclass(frozen=True)
class Settings:
    app: str | None = field(default=None, metadata=option(
        help="The WSGI application as MODULE:CALLABLE (e.g. flaskapp:app).",
        metavar="MODULE:CALLABLE"))
    bind: tuple[str, ...] = field(default=("127.0.0.1:8000",), metadata=option(
        "-b", "--bind", repeat=True, metavar="ADDRESS",
        help="Address to listen on: HOST:PORT, [::1]:PORT, unix:PATH, or fd://N (a "
             "listening socket the server was started with, e.g. by systemd). Repeatable; "
             "the environment variable takes a comma-separated list."))
    workers: int = field(default=None, metadata=option(  # type: ignore[assignment]
        "-w", "--workers", type=positive, env=("WEB_CONCURRENCY",),
        help="Worker processes of the prefork models (evloop, prefork, sync, gthread). "
             "Default: 2 x CPUs + 1, gunicorn's rule of thumb, so that a slow request "
             "holds one worker, not the server."))
    threads: int = field(default=None, metadata=option(  # type: ignore[assignment]
        "--threads", type=positive,
        help="Threads per process of the threaded model (prefork: >1 runs threaded "
             "workers). Default: 4 for threaded and gthread (waitress's 4), so that a "
             "slow request or a slow reader holds one thread; 1 for prefork (sync)."))
    model: str = field(default="evloop", metadata=option(
        "-k", "--model", choices=MODELS,
        help="Concurrency model. evloop (the default, the fastest): the prefork master "
             "with event-loop workers. sync and gthread are gunicorn's names for prefork "
             "workers running iterative and threaded."))
    backlog: int = field(default=2048, metadata=option(
        "--backlog", type=positive, help="Pending connections the kernel queues (listen())."))
    keep_alive: float = field(default=None, metadata=option(  # type: ignore[assignment]
        "--keep-alive", type=seconds, metavar="SECONDS",
        help="How long an idle keep-alive connection is kept open. 0 disables keep-alive "
             "(every response closes its connection, as gunicorn's sync workers do). "
             "Default: 5; 0 for the one-thread models (iterative, prefork/sync without "
             "--threads), where an idle keep-alive client would hold the whole worker."))
    timeout: float = field(default=30.0, metadata=option(
        "-t", "--timeout", type=seconds, metavar="SECONDS",
        help="Time for a request head to arrive and for each read and write; prefork "
             "kills a worker silent this long. 0 disables."))
    graceful_timeout: float = field(default=30.0, metadata=option(
        "--graceful-timeout", type=seconds, metavar="SECONDS",
        help="On SIGTERM, how long in-flight requests may take before the hard stop."))
    limit_request_line: int = field(default=8190, metadata=option(
        "--limit-request-line", type=non_negative, metavar="BYTES",
        help="Longest request line (414 above it); 0 = unlimited."))
    limit_request_fields: int = field(default=100, metadata=option(
        "--limit-request-fields", type=non_negative, metavar="N",
        help="Most header fields in a request (431 above it)."))
    limit_request_field_size: int = field(default=8190, metadata=option(
        "--limit-request-field_size", "--limit-request-field-size", type=non_negative,
        metavar="BYTES", help="Longest header field (431 above it); 0 = unlimited."))
    limit_request_head: int = field(default=65536, metadata=option(
        "--limit-request-head", type=non_negative, metavar="BYTES",
        help="Largest request head, its CRLFs and blank line counted (431 above it, as "
             "soon as that many bytes are in); 0 = only the bound the limits above imply."))
    max_body: int = field(default=1 << 30, metadata=option(
        "--max-body", type=non_negative, metavar="BYTES",
        help="Largest request body (413 above it); 0 = unlimited."))
    access_logfile: str | None = field(default=None, metadata=option(
        "--access-logfile", metavar="FILE",
        help="Access log in Combined Log Format; - is stdout. Off by default."))
    access_logformat: str | None = field(default=None, metadata=option(
        "--access-logformat", metavar="FORMAT",
        help="Access log line in gunicorn's atoms, e.g. '%%(h)s \"%%(r)s\" %%(s)s %%(D)s' "
             "(h r m U q H s b B f a t T M D L p u l, %%({header}i)s, %%({variable}e)s). "
             "Default: Combined Log Format and the microseconds taken."))
    error_logfile: str = field(default="-", metadata=option(
        "--error-logfile", metavar="FILE", help="Error log; - is stderr."))
    log_level: str = field(default="info", metadata=option(
        "--log-level", choices=LOG_LEVELS, type=str.lower,
        help="Least severe error-log level written."))
    forwarded_allow_ips: str = field(default="127.0.0.1", metadata=option(
        "--forwarded-allow-ips", metavar="IPS",
        help="Comma-separated peers whose X-Forwarded-For/-Proto are trusted; * = all."))
    root_path: str = field(default="", metadata=option(
        "--root-path", metavar="PATH", help="SCRIPT_NAME: the path the app is mounted at."))
    chdir: str | None = field(default=None, metadata=option(
        "--chdir", metavar="DIR", help="Change to this directory before loading the app."))
    pythonpath: str | None = field(default=None, metadata=option(
        "--pythonpath", metavar="DIRS",
        help="Comma-separated directories to put first on sys.path."))
    max_children: int = field(default=1024, metadata=option(
        "--max-children", type=positive,
        help="fork model: most children at once; the parent stops accepting at the bound."))
    pid: str | None = field(default=None, metadata=option(
        "-p", "--pid", metavar="FILE",
        help="Write the main process's PID to FILE (removed at exit). Refuses to start if "
             "FILE names a process still running."))
    reload: bool = field(default=False, metadata=option(
        "--reload", type=boolean, flag_only=True,
        help="Development: when a .py file under the working directory (after --chdir) "
             "or --pythonpath changes, reload the app as HUP does. prefork models."))
    max_requests: int = field(default=0, metadata=option(
        "--max-requests", type=non_negative,
        help="prefork: recycle a worker after this many requests (the last response "
             "says Connection: close); 0 = never."))
    max_requests_jitter: int = field(default=0, metadata=option(
        "--max-requests-jitter", type=non_negative,
        help="prefork: add up to this many to --max-requests, per worker."))
    lesson: str | None = field(default=None, metadata=option(
        "--lesson", choices=LESSONS,
        help="Run the fork model with one of part 3's bugs put back (see labs)."))
    status_bind: str | None = field(default=None, metadata=option(
        "--status-bind", metavar="HOST:PORT",
        help="Serve /status (JSON) and /metrics on this separate address. Off by default."))
    pypy_jit: str = field(default="", metadata=option(
        "--pypy-jit", type=jit_params, metavar="PARAM=N,...",
        help="On PyPy, parameters for its JIT, as `pypy --jit PARAM=N,...` would set "
             "them, applied before the app is imported and the workers forked (e.g. "
             "trace_limit=16384; see server/docs/pypy-jit.md). Ignored on CPython. "
             "Default: PyPy's own."))
    pypy_gc: str = field(default="nursery=4M,increment_step=256K", metadata=option(
        "--pypy-gc", type=gc_params, metavar="PARAM=VALUE,...|off",
        help="On PyPy, parameters for its collector, set as PyPy's PYPY_GC_<PARAM> "
             "variables: PyPy reads them only when it starts, so wizgy restarts itself "
             "in place (exec, same PID) with those not already in the environment (one "
             "set there wins). The default fixes the nursery (PyPy sizes it from the CPU's "
             "cache: 1 MB on one host, 240 MB on another) and keeps a major "
             "collection's steps short (p99; see server/docs/pypy-jit.md); `off`: "
             "PyPy's own. PyPy takes PYPYLOG out of "
             "the environment as it reads it: to log, set the PYPY_GC_* variables "
             "yourself or pass `off`, so that no exec loses it. Ignored on CPython."))
    config: str | None = field(default=None, metadata=option(
        "-c", "--config", metavar="FILE",
        help="A Python file of settings, as gunicorn.conf.py: `workers = 4`, "
             "`bind = [\"0.0.0.0:8000\"]`. wizgy's names or gunicorn's (worker_class, "
             "keepalive, accesslog, errorlog, loglevel, pidfile, wsgi_app)."))
    print_config: bool = field(default=False, metadata=option(
        "--print-config", type=boolean, flag_only=True,
        help="Print the resolved settings and exit."))

    def __post_init__(self) -> None:
        # The defaults that depend on the model (a frozen dataclass: set once, here).
        if self.workers is None:
            prefork = self.model in ("evloop", "prefork", "sync", "gthread")
            object.__setattr__(self, "workers", default_workers() if prefork else 1)
        if self.threads is None:
            object.__setattr__(self, "threads", 4 if self.model in ("threaded", "gthread") else 1)
        if self.keep_alive is None:
            one_thread = self.model == "iterative" or \
                self.model in ("prefork", "sync") and self.threads == 1
            object.__setattr__(self, "keep_alive", 0.0 if one_thread else 5.0)

    @property
    def main_model(self) -> str:
        """The model the main process runs: -k's canonical name, gunicorn's aliases
        resolved. Under evloop, sync and gthread that is the prefork master; its
        workers run another model (PreforkModel.worker_model picks it)."""
        return {"sync": "prefork", "gthread": "prefork", "evloop": "prefork"}.get(
            self.model, self.model)

    @property
    def worker_threads(self) -> int:
        return max(self.threads, 2) if self.model == "gthread" else self.threads


def default_workers() -> int:
    """--workers when not given: 2 x CPUs + 1 (the CPUs this process may run on)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 2 * cpus + 1


def env_names(f) -> tuple[str, ...]:
    return ("WIZGY_" + f.name.upper(),) + f.metadata["env"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wizgy", description="wizgy: a WSGI server built from first principles.",
        epilog="Every option can also be set as WIZGY_<OPTION>, e.g. WIZGY_WORKERS=4.",
    )
    for f in fields(Settings):
        meta = f.metadata
        kwargs = {"help": meta["help"] + f" [env {', '.join(env_names(f))}]",
                  "default": None}
        if f.name == "app":
            parser.add_argument("app", nargs="?", metavar=meta["metavar"], **kwargs)
            continue
        if meta["flag_only"]:
            parser.add_argument(*meta["flags"], dest=f.name, action="store_const",
                                const="true", **kwargs)
            continue
        if meta["repeat"]:
            kwargs["action"] = "append"
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
            kwargs["type"] = meta["type"]  # before argparse checks: --log-level INFO
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*meta["flags"], dest=f.name, **kwargs)
    return parser


def parse(argv: list[str] | None = None, environ=None) -> Settings:
    """Settings from the command line, the environment and a --config file. Raises
    ConfigError."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    command_line = vars(parser.parse_args(argv))
    cmd_args, unknown = parser.parse_known_args(shlex.split(environ.get("WIZGY_CMD_ARGS", "")))
    if unknown:
        raise ConfigError(f"WIZGY_CMD_ARGS: unrecognized arguments: {' '.join(unknown)}")
    cmd_args = vars(cmd_args)
    path = command_line["config"] or cmd_args["config"] or environ.get("WIZGY_CONFIG")
    in_file = read_config_file(path) if path else {}
    values = {}
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        raw, source = command_line[f.name], flag
        if raw is None:
            raw, source = cmd_args[f.name], "WIZGY_CMD_ARGS " + flag
        if raw is None:
            for name in env_names(f):
                if environ.get(name, "") != "":
                    raw, source = environ[name], name
                    if f.metadata["repeat"]:
                        raw = [part.strip() for part in raw.split(",") if part.strip()]
                    break
        if raw is None and f.name in in_file:
            raw, source = in_file[f.name], f"{path}: {f.name}"
        if raw is None:
            continue
        values[f.name] = convert(f, raw, source)
    return Settings(**values)


# gunicorn.conf.py names that differ from wizgy's
GUNICORN_NAMES = {"worker_class": "model", "keepalive": "keep_alive", "accesslog":
                  "access_logfile", "access_log_format": "access_logformat", "errorlog": "error_logfile", "loglevel": "log_level",
                  "pidfile": "pid", "wsgi_app": "app"}


def read_config_file(path: str) -> dict:
    """--config FILE: run it as Python; its module-level names are settings. Like
    gunicorn, names that are not settings are ignored, but here each is said (a typo
    or a server hook, which wizgy has none of, should not pass silently)."""
    try:
        namespace = runpy.run_path(path)
    except Exception as error:  # noqa: BLE001 (a config file may raise anything)
        raise ConfigError(f"--config {path}: {type(error).__name__}: {error}") from None
    settings = {f.name: f for f in fields(Settings)}
    out = {}
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType):
            continue  # __file__ and the like, and `import multiprocessing`
        name = GUNICORN_NAMES.get(key, key)
        f = settings.get(name)
        if f is None or name in ("config", "print_config"):
            print(f"wizgy: warning: {path}: {key} is not a setting; ignored", file=sys.stderr)
            continue
        if f.metadata["repeat"]:  # bind = "a:1" or bind = ["a:1", "b:2"]
            items = value if isinstance(value, (list, tuple)) else [value]
            out[name] = [as_text(item) for item in items]
        else:
            out[name] = as_text(value)
    return out


def as_text(value) -> str:
    """A config file's Python value as the text a flag would give."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def convert(f, raw, source: str):
    meta = f.metadata
    if meta["repeat"]:
        return tuple(convert_one(f, item, source) for item in raw)
    return convert_one(f, raw, source)


def convert_one(f, raw: str, source: str):
    meta = f.metadata
    try:
        value = meta["type"](raw)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{source}: {value!r} is not one of {', '.join(meta['choices'])}")
    return value


def describe(settings: Settings) -> str:
    """--print-config: one `name = value` line per setting."""
    return "\n".join(f"{f.name:26} = {getattr(settings, f.name)!r}" for f in fields(Settings))


def markdown_table() -> str:
    """The README's option table, generated from the one definition above."""
    rows = ["| Option | Environment | Default | Meaning |", "|---|---|---|---|"]
    for f in fields(Settings):
        meta = f.metadata
        flags = ", ".join(f"`{flag}`" for flag in meta["flags"]) or f"`{meta['metavar']}`"
        envs = ", ".join(f"`{name}`" for name in env_names(f))
        default = f.default if not isinstance(f.default, tuple) else ",".join(f.default)
        default = "auto" if default is None and f.name in ("workers", "threads",
                                                           "keep_alive") else default
        text = meta["help"].replace("%%", "%")  # (argparse's escape)
        rows.append(f"| {flags} | {envs} | `{default}` | {text} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m wizgy.config  -> the README table
    print(markdown_table())
