"""What a pre-fork worker runs beside its model (prefork.py): the watchdog thread that
sends the master its heartbeat, and the fresh import of the app after a HUP.

The heartbeat is the worker's only sign of life: the master kills a worker silent
longer than --timeout. So the watchdog stays silent while a request has been inside
the app longer than a beat interval (a stuck app is caught), but keeps beating while
the worker merely waits for clients (an idle worker is not stuck) and while the app
receives a request body (an app reading a long upload is busy, not stuck: each body
read it makes restarts its clock, and each read is bounded by --timeout itself).
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import sys
import threading
import time

from .base import Model
from .reloader import is_app_file


class Watchdog(threading.Thread):
    """A worker's heartbeat to the master, written from a thread so that waiting for a
    client is not silence; but no beat while a request has been in the app longer
    than a beat interval, so a stuck app goes silent and the master kills it after
    --timeout. Also: USR1 (reopen logs) and the master's death. The app it wraps
    counts calls for --max-requests."""

    def __init__(self, ctx, worker: Model, heartbeat_w: int, master_pid: int) -> None:
        super().__init__(name="wizgy-watchdog", daemon=True)
        settings = ctx.settings
        self.ctx, self.worker, self.heartbeat_w, self.master_pid = \
            ctx, worker, heartbeat_w, master_pid
        self.interval = min(1.0, settings.timeout / 4) if settings.timeout else 1.0
        self.max_requests = settings.max_requests and \
            settings.max_requests + random.randint(0, settings.max_requests_jitter)
        self.in_app: dict[int, float] = {}  # thread id -> when its app call began
        self.calls = 0
        self.reopen_logs = False
        app = ctx.app

        def watched_app(environ, start_response):
            key = threading.get_ident()
            self.in_app[key] = time.monotonic()
            self.calls += 1
            last = self.calls == self.max_requests
            if last:  # recycle: this response says Connection: close, then we stop
                self.ctx.stopping = True
            try:
                return app(environ, start_response)
            finally:
                del self.in_app[key]
                if last:
                    self.ctx.logs.error.info("Worker %d reached --max-requests (%d): "
                                             "recycling", os.getpid(), self.calls)
                    os.kill(os.getpid(), signal.SIGTERM)

        ctx.app = watched_app

        def progress() -> None:
            key = threading.get_ident()
            if key in self.in_app:
                self.in_app[key] = time.monotonic()

        ctx.progress = progress
        signal.signal(signal.SIGUSR1, self.on_usr1)

    def on_usr1(self, signum, frame) -> None:
        self.reopen_logs = True

    def run(self) -> None:
        stopping = False
        while True:
            if not stopping and os.getppid() != self.master_pid:
                stopping = True
                self.ctx.logs.error.warning("Master is gone: worker %d stops", os.getpid())
                os.kill(os.getpid(), signal.SIGTERM)  # the worker model's graceful stop
            if self.reopen_logs:
                self.reopen_logs = False
                self.ctx.logs.reopen()
                self.ctx.logs.error.info("Worker %d reopened the log files", os.getpid())
            if not self.stuck():
                try:
                    os.write(self.heartbeat_w, b".")
                except BlockingIOError:
                    pass  # the master is behind reading; it has seen us recently
                except OSError:
                    return
            time.sleep(self.interval)

    def stuck(self) -> bool:
        oldest = min(self.in_app.values(), default=None)
        return oldest is not None and time.monotonic() - oldest > self.interval


def import_app(spec: str, roots: list[str]):
    """MODULE:CALLABLE imported afresh (cli.py set up sys.path and the directory): the
    module, its package, and every other module loaded from the app's own folders
    (`roots`), so that a helper module the app imports is read again too. Not wizgy's
    own modules, wherever they are, nor installed packages."""
    module_name, _, attribute = spec.partition(":")
    for name, module in list(sys.modules.items()):
        if name == "wizgy" or name.startswith("wizgy.") or name == "__main__":
            continue
        if name == module_name or name.startswith(module_name + ".") or \
                is_app_file(getattr(module, "__file__", None), roots):
            del sys.modules[name]
    importlib.invalidate_caches()
    return getattr(importlib.import_module(module_name), attribute or "application")
