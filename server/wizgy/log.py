"""Logs an operator can read: one line per event, gunicorn's layout.

Error log:   [2026-11-26 17:36:17 +0000] [4242] [INFO] Listening at: http://127.0.0.1:8000
Access log:  Combined Log Format (Common Log Format plus referer and user agent),
             then the microseconds the request took; or --access-logformat, in
             gunicorn's atoms (Atoms below).
"""

from __future__ import annotations

import base64
import binascii
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


class Atoms(dict):
    """gunicorn's access-log atoms for `format % Atoms(...)`. The fixed ones are
    worked out up front; %({header}i)s (a request header) and %({name}e)s (an environ
    key) when the format asks; any other name is "-", as in gunicorn. Response
    headers, %({header}o)s, are not kept after the response: "-" too."""

    def __init__(self, environ: dict, status: int, size: int, seconds: float) -> None:
        method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
        protocol = environ["SERVER_PROTOCOL"]
        super().__init__(
            h=environ.get("REMOTE_ADDR") or "-", l="-", u=_user(environ),
            t=time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
            r=f"{method} {environ.get('RAW_URI', '')} {protocol}",
            m=method, U=environ.get("PATH_INFO", ""), q=query, H=protocol,
            s=status, B=size, b=size or "-",
            f=environ.get("HTTP_REFERER", "-"), a=environ.get("HTTP_USER_AGENT", "-"),
            T=int(seconds), M=int(seconds * 1e3), D=int(seconds * 1e6), L=f"{seconds:.6f}",
            p=f"<{os.getpid()}>",
        )
        self.environ = environ

    def __missing__(self, key: str):
        if key.startswith("{") and key.endswith("}i"):
            name = "HTTP_" + key[1:-2].upper().replace("-", "_")
            return self.environ.get(name, "-")
        if key.startswith("{") and key.endswith("}e"):
            return self.environ.get(key[1:-2], "-")
        return "-"


def _user(environ: dict) -> str:
    """The user name of Basic authentication (never the password), or "-"."""
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return "-"
    return decoded.partition(":")[0] or "-"


SAMPLE_ENVIRON = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}


class Logs:
    """The error log (a `logging.Logger`) and the access log, reopenable on SIGUSR1."""

    def __init__(self, error_logfile: str = "-", access_logfile: str | None = None,
                 level: str = "info", access_format: str | None = None) -> None:
        """Raises ValueError for an access format that cannot be filled in."""
        self.error_path = error_logfile
        self.access_path = access_logfile
        self.access_format = access_format
        if access_format is not None:
            try:
                access_format % Atoms(SAMPLE_ENVIRON, 200, 0, 0.0)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{access_format!r}: {error}") from None
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
        if self.access_format is not None:
            line = self.access_format % Atoms(environ, status, size, seconds)
            self._access_stream.write(line + "\n")
            return
        request_line = f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} " \
                       f"{environ['SERVER_PROTOCOL']}"
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        self._access_stream.write(
            f'{environ["REMOTE_ADDR"]} - - [{stamp}] "{request_line}" {status} '
            f'{size or "-"} "{environ.get("HTTP_REFERER", "-")}" '
            f'"{environ.get("HTTP_USER_AGENT", "-")}" {seconds * 1e6:.0f}\n'
        )
