"""What every connection of a process shares: the app, the settings, the logs, the
counters and the flags a model sets (ServerContext); and those counters (Stats)."""

from __future__ import annotations

from collections.abc import Callable

from .http import Limits


class Stats:
    """Counters of one process; the status endpoint adds them up across processes."""

    __slots__ = ("requests_total", "responses_4xx", "responses_5xx", "connections_total",
                 "active", "idle", "emfile_events", "fork_failures")

    def __init__(self) -> None:
        self.requests_total = self.responses_4xx = self.responses_5xx = 0
        self.connections_total = self.active = self.idle = 0
        self.emfile_events = self.fork_failures = 0

    def count(self, status: int) -> None:
        self.requests_total += 1
        if status >= 500:
            self.responses_5xx += 1
        elif status >= 400:
            self.responses_4xx += 1


class ServerContext:
    """Everything a connection needs from the server: app, settings, logs, flags."""

    def __init__(self, app, settings, logs, *, multithread: bool, multiprocess: bool,
                 board=None) -> None:
        self.app = app
        self.settings = settings
        self.logs = logs
        self.multithread = multithread
        self.multiprocess = multiprocess
        self.limits = Limits(
            request_line=settings.limit_request_line,
            fields=settings.limit_request_fields,
            field_size=settings.limit_request_field_size,
            head=settings.limit_request_head,
            max_body=settings.max_body,
        )
        allowed = [ip.strip() for ip in settings.forwarded_allow_ips.split(",") if ip.strip()]
        self.trust_all = "*" in allowed
        self.trusted = frozenset(allowed)
        self.board = board  # the Scoreboard shared with child processes, if any
        self.stats = Stats()  # replaced by a scoreboard slot (same attributes) in cli.py
        self.stopping = False  # set by the model on graceful shutdown
        # Called as body bytes reach the app: a worker's watchdog (prefork) counts an
        # app that is receiving an upload as busy, not stuck.
        self.progress: Callable[[], None] | None = None
        self.keep_alive = settings.keep_alive > 0  # --keep-alive 0: close after each response

    def trusts(self, peer_ip: str) -> bool:
        return self.trust_all or peer_ip in self.trusted or peer_ip == ""  # "" = unix socket
