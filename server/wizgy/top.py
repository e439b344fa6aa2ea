"""`wizgy top [--url URL]` (or `python -m wizgy.top`): the status endpoint, live, in a
terminal. Polls URL/status once a second and redraws one screen with plain ANSI
escapes (no curses: it works in any terminal, in `docker compose exec`, and in a
pipe); `--once` prints one frame and exits.

    wizgy top --url http://127.0.0.1:9000
    docker compose exec server wizgy top
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request

CLEAR = "\x1b[H\x1b[2J"
BOLD, RED, DIM, RESET = "\x1b[1m", "\x1b[31;1m", "\x1b[2m", "\x1b[0m"


def default_url() -> str:
    """From WIZGY_STATUS_BIND when set (the server's own setting), else port 9000."""
    bind = os.environ.get("WIZGY_STATUS_BIND", "127.0.0.1:9000")
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def fetch(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=timeout) as resp:
        return json.load(resp)


def human_bytes(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def frame(report: dict, url: str, rate: float | None = None, rows: int = 40,
          color: bool = False) -> str:
    """One screen of text for a /status report; at most `rows` lines."""
    def paint(text: str, style: str) -> str:
        return f"{style}{text}{RESET}" if color else text

    r = report
    limit = r["nofile_limit"] if r["nofile_limit"] is not None else "unlimited"
    rate_text = f" ({rate:.1f}/s)" if rate is not None else ""
    zombies = str(r["zombies"])
    head = [
        paint(f"wizgy top  {url}  host {r.get('hostname', '?')}  "
              f"{time.strftime('%H:%M:%S', time.localtime(r['time']))}", BOLD),
        (f"model {r['model']}  runtime {r.get('runtime', '?')}  lesson {r['lesson'] or '-'}  "
         f"app {r['app']}  {r['role']} pid {r['pid']}  up {human_duration(r['uptime_seconds'])}"),
        (f"children {r['children']}  zombies "
         f"{paint(zombies, RED) if r['zombies'] else zombies}  "
         f"open fds {r['open_fds']}/{limit}  nproc limit {r['nproc_limit'] or 'unlimited'}"),
        (f"requests {r['requests_total']}{rate_text}  4xx {r['responses_4xx']}  "
         f"5xx {r['responses_5xx']}  active {r['connections_active']}  "
         f"idle {r['connections_idle']}  fork failures {r['fork_failures']}  "
         f"EMFILE {r['emfile_events']}"),
        "",
        paint(f"{'PID':>7}  {'ROLE':<7} {'STATE':<5} {'FDS':>6} {'RSS':>8} {'REQUESTS':>9}",
              BOLD),
    ]
    events = [f"{time.strftime('%H:%M:%S', time.localtime(e['time']))}  {e['event']}"
              f"{'  pid ' + str(e['pid']) if 'pid' in e else ''}"
              for e in r.get("events", [])][-5:]
    room = max(1, rows - len(head) - (len(events) + 2 if events else 0))
    table = []
    for p in r["processes"][:room]:
        line = (f"{p['pid']:>7}  {p['role']:<7} {p['state']:<5} "
                f"{'-' if p['open_fds'] is None else p['open_fds']:>6} "
                f"{human_bytes(p['rss_bytes']):>8} {p['requests']:>9}")
        table.append(paint(line, RED) if p["state"] == "Z" else line)
    hidden = len(r["processes"]) - len(table)
    if hidden > 0:
        table[-1] = paint(f"{'':>7}  ... {hidden + 1} more processes", DIM)
    tail = ["", paint("recent events", BOLD), *events] if events else []
    return "\n".join(head + table + tail) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wizgy top",
                                     description="wizgy's status endpoint, live.")
    parser.add_argument("--url", default=default_url(),
                        help="the status listener (default: from WIZGY_STATUS_BIND, "
                             "else http://127.0.0.1:9000)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.once:
        try:
            print(frame(fetch(args.url), args.url), end="")
        except (OSError, ValueError) as error:
            print(f"wizgy top: cannot read {args.url}/status: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        live(args.url, args.interval)
    except KeyboardInterrupt:
        pass
    return 0


def live(url: str, interval: float) -> None:
    previous: dict | None = None
    while True:
        size = shutil.get_terminal_size()
        try:
            report = fetch(url)
        except (OSError, ValueError) as error:
            text = f"wizgy top: cannot read {url}/status: {error} (retrying)\n"
        else:
            rate = None
            if previous and report["time"] > previous["time"] and \
                    report.get("hostname") == previous.get("hostname"):
                rate = (report["requests_total"] - previous["requests_total"]) / \
                    (report["time"] - previous["time"])
                rate = rate if rate >= 0 else None  # the server restarted
            previous = report
            text = frame(report, url, rate, rows=size.lines - 1, color=sys.stdout.isatty())
        lines = [line[:size.columns + 20] for line in text.splitlines()]  # ANSI codes: slack
        sys.stdout.write(CLEAR + "\n".join(lines) + "\n")
        sys.stdout.flush()
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
