"""Logs an operator can read: one line per event, gunicorn's layout.

Error log:   [2026-11-26 17:36:17 +0000] [4242] [INFO] Listening at: http://127.0.0.1:8000
Access log:  Combined Log Format (Common Log Format plus referer and user agent).
"""

from __future__ import annotations

import logging
import os
import sys
import time

LEVELS = ("debug", "info", "warning", "error", "critical")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.created))
        line = f"[{stamp}] [{os.getpid()}] [{record.levelname}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Logs:
    """The error log (a `logging.Logger`) and the access log, reopenable on SIGUSR1."""

    def __init__(self, error_logfile: str = "-", access_logfile: str | None = None,
                 level: str = "info") -> None:
        self.error_path = error_logfile
        self.access_path = access_logfile
        self.error = logging.getLogger("wizgy.error")
        self.error.propagate = False
        self.error.setLevel(level.upper())
        self._access_stream = None
        self.reopen()

    @property
    def errors_stream(self):
        """wsgi.errors: the error log's stream."""
        return self._error_stream

    def reopen(self) -> None:
        """Open (again) the log files, e.g. after logrotate moved them."""
        for handler in list(self.error.handlers):
            self.error.removeHandler(handler)
            if handler.stream not in (sys.stderr, sys.stdout):
                handler.close()
        self._error_stream = self._open(self.error_path, sys.stderr)
        handler = logging.StreamHandler(self._error_stream)
        handler.setFormatter(_Formatter())
        self.error.addHandler(handler)
        old = self._access_stream
        self._access_stream = self._open(self.access_path, sys.stdout) if self.access_path else None
        self.access_enabled = self._access_stream is not None  # read once per request
        if old not in (None, sys.stdout, sys.stderr):
            old.close()

    @staticmethod
    def _open(path: str | None, default):
        if path in (None, "", "-"):
            return default
        return open(path, "a", buffering=1, encoding="utf-8")

    def access(self, environ: dict, status: int, size: int, seconds: float) -> None:
        request_line = f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} " \
                       f"{environ['SERVER_PROTOCOL']}"
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        self._access_stream.write(
            f'{environ["REMOTE_ADDR"]} - - [{stamp}] "{request_line}" {status} '
            f'{size or "-"} "{environ.get("HTTP_REFERER", "-")}" '
            f'"{environ.get("HTTP_USER_AGENT", "-")}" {seconds * 1e6:.0f}\n'
        )
