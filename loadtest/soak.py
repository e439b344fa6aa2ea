"""The soak: mixed Locust load on each model for a while; memory and descriptors stay flat.

    python loadtest/soak.py --models evloop,threaded --duration 600 --json soak.json

For each model: start wizgy on 127.0.0.1 with --status-bind, count each process's
descriptors at rest, run Locust headless (loadtest/soak_locustfile.py, MixedUser over
apps/flaskapp.py, or QuickUser over the test app) for --duration seconds while reading
/status every --interval seconds, then let keep-alive connections expire and count
again. The checks, after --warmup seconds:

  rss        each long-lived process (main, workers, status): the median RSS of the
             last samples is at most 5% above the median of the first ones
  fds        each long-lived process has no more descriptors at rest after the load
             than at rest before it (plus 5%); under load they are only reported,
             since open connections come and go
  zombies    none at rest, and none seen in two samples running (a child is
             a zombie for a moment between exit and reaping; more is a reaping bug)
  errors     no Locust failure, no 5xx, no traceback in the server log, and no
             worker replaced during the run (unless signals replace them on purpose)

Reloads under load (prefork models): --hup-every N sends the master HUP every N
seconds, --ttin-ttou-every N a TTIN, then a TTOU N/2 seconds later, every N seconds.
Workers are then replaced on purpose: the rss and fds checks look at the processes
that live through the whole run (the master, the status process), and the errors
check still counts every Locust failure.

Prints a table and writes everything sampled to --json. Exit status 1 if any check
fails. Needs locust (the `make test` venv has it); loads only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCUSTFILE = HERE / "soak_locustfile.py"
ALL_MODELS = ("iterative", "threaded", "evloop", "fork", "prefork", "gthread")
GROWTH = 0.05  # the most a long-lived process may grow after warm-up
KEEP_ALIVE = 2.0  # seconds; short, so connections are gone soon after the load stops
APPS = {  # --app: (wizgy's app argument, its directory, the Locust user class)
    "flask": ("flaskapp:app", REPO / "apps", "MixedUser"),
    "testapp": ("testapp:app", REPO / "server" / "tests" / "apps", "QuickUser"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="evloop",
                        help=f"comma-separated, from {', '.join(ALL_MODELS)}; or all")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load per model")
    parser.add_argument("--warmup", type=float, help="seconds before the baseline "
                        "(default: a tenth of --duration, at least 5)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--users", type=int, default=20, help="Locust users")
    parser.add_argument("--workers", type=int, default=2, help="-w for the prefork models")
    parser.add_argument("--threads", type=int, default=4, help="--threads for threaded, gthread")
    parser.add_argument("--app", choices=sorted(APPS), default="flask")
    parser.add_argument("--json", type=Path, help="write every sample and verdict here")
    parser.add_argument("--hup-every", type=float, default=0,
                        help="prefork models: HUP the master every this many seconds")
    parser.add_argument("--ttin-ttou-every", type=float, default=0,
                        help="prefork models: TTIN, then TTOU half as long after, this often")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs wizgy, e.g. a PyPy venv's (default: this "
                        "one; Locust always runs on this one)")
    args = parser.parse_args(argv)
    args.models = list(ALL_MODELS) if args.models == "all" else args.models.split(",")
    unknown = set(args.models) - set(ALL_MODELS)
    if unknown:
        parser.error(f"unknown models: {', '.join(sorted(unknown))}")
    if args.warmup is None:
        args.warmup = max(5.0, args.duration / 10)
    return args


# the server ------------------------------------------------------------------------------
class Server:
    """wizgy as a subprocess in its own session, with its log in a temporary file."""

    def __init__(self, model: str, args: argparse.Namespace, tmp: Path) -> None:
        app, directory, _ = APPS[args.app]
        self.log_path = tmp / f"wizgy-{model}.log"
        cmd = [args.python, "-m", "wizgy", "-b", "127.0.0.1:0",
               "--status-bind", "127.0.0.1:0", "-k", model, "-w", str(args.workers),
               "--threads", str(args.threads), "--keep-alive", str(KEEP_ALIVE),
               "--chdir", str(directory), app]
        env = {**os.environ, "PYTHONPATH": str(REPO / "server"), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        port = self.wait_for(r"Listening at: http://[\d.]+:(\d+)")
        status_port = self.wait_for(r"Status at: http://[\d.]+:(\d+)")
        self.url = f"http://127.0.0.1:{port}"
        self.status_url = f"http://127.0.0.1:{status_port}/status"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"wizgy did not start:\n{self.output()}")

    def status(self) -> dict:
        with urllib.request.urlopen(self.status_url, timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of ours left in the session
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)


def sample(server: Server, started: float) -> dict:
    report = server.status()
    return {
        "t": round(time.monotonic() - started, 1),
        "requests_total": report["requests_total"],
        "responses_5xx": report["responses_5xx"],
        "zombies": report["zombies"],
        "processes": [{k: p[k] for k in ("pid", "role", "state", "rss_bytes", "open_fds")}
                      for p in report["processes"]],
    }


def long_lived(report: dict) -> dict[int, str]:
    """pid -> role of the processes that last: all but a fork model's children."""
    return {p["pid"]: p["role"] for p in report["processes"] if p["role"] != "child"}


def at_rest(server: Server, before: dict[int, int] | None, timeout: float = 15.0) -> dict:
    """A sample once idle connections are gone: descriptors no more than `before`
    (or, with no `before`, the same in two samples a second apart)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        report = sample(server, time.monotonic())
        fds = {p["pid"]: p["open_fds"] for p in report["processes"] if p["role"] != "child"}
        settled = all(fds.get(pid, 0) <= n for pid, n in before.items()) if before \
            else fds == last
        if settled or time.monotonic() > deadline:
            return report
        last = fds
        time.sleep(1.0)


# Locust ------------------------------------------------------------------------------------
def start_locust(args: argparse.Namespace, model: str, url: str, tmp: Path):
    user = APPS[args.app][2]
    env = {**os.environ, "WIZGY_CLOSE": "1" if model == "iterative" else "0"}
    prefix = tmp / f"locust-{model}"
    log = open(tmp / f"locust-{model}.log", "wb")  # noqa: SIM115 - closed by the caller
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(args.users), "-r", str(max(1, args.users // 2)),
           "-t", f"{int(args.duration)}s", "--host", url, "--csv", str(prefix),
           "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING", user]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    return proc, log, prefix


def locust_results(prefix: Path) -> dict:
    with open(f"{prefix}_stats.csv", newline="") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = [{"error": r["Error"], "count": int(r["Occurrences"]),
                     "name": r["Name"]} for r in csv.DictReader(f)]
    return {"requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
            "requests_per_second": round(float(total["Requests/s"]), 1),
            "median_ms": float(total["Median Response Time"]),
            "p99_ms": float(total["99%"] or 0), "failure_list": failures}


# one model ---------------------------------------------------------------------------------
def soak(model: str, args: argparse.Namespace, tmp: Path) -> dict:
    server = Server(model, args, tmp)
    try:
        wait_until_ready(server, model, args)
        rest_before = at_rest(server, None)
        started = time.monotonic()
        proc, log, prefix = start_locust(args, model, server.url, tmp)
        signaller = Signaller(server.proc.pid, args, started + args.duration) \
            if model in PREFORK_MODELS else None
        samples = []
        try:
            deadline = started + args.duration + 60
            while proc.poll() is None and time.monotonic() < deadline:
                samples.append(sample(server, started))
                time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
        finally:
            if signaller is not None:
                signaller.stop()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            log.close()
        before_fds = {p["pid"]: p["open_fds"] for p in rest_before["processes"]
                      if p["role"] != "child"}
        rest_after = at_rest(server, before_fds)
        result = {"model": model, "locust": locust_results(prefix), "rest_before": rest_before,
                  "rest_after": rest_after, "samples": samples,
                  "signals": signaller.sent if signaller else {}}
        result["checks"] = check(result, args, server.output())
        return result
    finally:
        server.stop()


PREFORK_MODELS = ("evloop", "prefork", "gthread")


class Signaller(threading.Thread):
    """--hup-every / --ttin-ttou-every: signals to the master while the load runs."""

    def __init__(self, pid: int, args: argparse.Namespace, until: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.until = pid, until
        self.plan = [(signal.SIGHUP, args.hup_every, 0.0),
                     (signal.SIGTTIN, args.ttin_ttou_every, 0.0),
                     (signal.SIGTTOU, args.ttin_ttou_every, args.ttin_ttou_every / 2)]
        self.plan = [(sig, every, offset) for sig, every, offset in self.plan if every]
        self.sent = {sig.name: 0 for sig, _, _ in self.plan}
        self.done = threading.Event()
        if self.plan:
            self.start()

    def run(self) -> None:
        start = time.monotonic()
        due = {sig: start + every + offset for sig, every, offset in self.plan}
        while not self.done.is_set():
            sig, when = min(due.items(), key=lambda item: item[1])
            if when >= self.until or self.done.wait(max(0.0, when - time.monotonic())):
                return
            os.kill(self.pid, sig)
            self.sent[sig.name] += 1
            due[sig] += next(every for s, every, _ in self.plan if s == sig)

    def stop(self) -> None:
        self.done.set()


def wait_until_ready(server: Server, model: str, args: argparse.Namespace) -> None:
    if model not in PREFORK_MODELS:
        return
    deadline = time.monotonic() + 15
    while sum(p["role"] == "worker" for p in server.status()["processes"]) < args.workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"{model}: workers did not start:\n{server.output()}")
        time.sleep(0.2)
    time.sleep(0.5)


def check(result: dict, args: argparse.Namespace, log: str) -> dict:
    """Every check's verdict: {"name": {"ok": bool, "detail": str, ...}}."""
    samples = [s for s in result["samples"] if s["t"] >= args.warmup]
    return {
        "rss": check_rss(samples),
        "fds": check_fds(result["rest_before"], result["rest_after"], samples,
                         replaced=any(result["signals"].values())),
        "zombies": check_zombies(result["samples"], result["rest_after"]),
        "errors": check_errors(result, samples, log),
    }


def series(samples: list[dict], key: str) -> dict[int, list]:
    """pid -> its values of `key` over the samples, for processes in every sample."""
    if not samples:
        return {}
    pids = set.intersection(*(set(long_lived(s)) for s in samples))
    return {pid: [next(p[key] for p in s["processes"] if p["pid"] == pid) for s in samples]
            for pid in sorted(pids)}


def window(values: list, fraction: float = 0.25) -> int:
    return max(2, int(len(values) * fraction))


def check_rss(samples: list[dict]) -> dict:
    if len(samples) < 4:
        return {"ok": False, "detail": f"only {len(samples)} samples after warm-up"}
    roles = long_lived(samples[-1])
    growth = {}
    for pid, rss in series(samples, "rss_bytes").items():
        n = window(rss)
        first, last = statistics.median(rss[:n]), statistics.median(rss[-n:])
        growth[pid] = {"role": roles.get(pid, "?"), "baseline_mb": round(first / 2**20, 2),
                       "final_mb": round(last / 2**20, 2),
                       "max_mb": round(max(rss) / 2**20, 2),
                       "growth": round(last / first - 1, 4) if first else None}
    bad = {pid: g for pid, g in growth.items() if g["growth"] is None or g["growth"] > GROWTH}
    worst = max((g["growth"] or 0 for g in growth.values()), default=0)
    return {"ok": not bad and bool(growth), "per_process": growth,
            "detail": f"worst growth {worst:+.1%} over {len(growth)} processes"
            + (f"; above {GROWTH:.0%}: {sorted(bad)}" if bad else "")}


def check_fds(rest_before: dict, rest_after: dict, samples: list[dict],
              replaced: bool = False) -> dict:
    before = {p["pid"]: p["open_fds"] for p in rest_before["processes"] if p["role"] != "child"}
    after = {p["pid"]: p["open_fds"] for p in rest_after["processes"] if p["role"] != "child"}
    if replaced:  # signals replaced the workers on purpose: the processes that stayed
        before = {pid: n for pid, n in before.items() if pid in after}
        after = {pid: n for pid, n in after.items() if pid in before}
    grown = {pid: (n, after.get(pid)) for pid, n in before.items()
             if after.get(pid) is None or after[pid] > n * (1 + GROWTH)}
    under_load = {pid: {"min": min(v), "max": max(v)}
                  for pid, v in series(samples, "open_fds").items()}
    return {"ok": not grown, "rest_before": before, "rest_after": after,
            "under_load": under_load,
            "detail": (f"at rest {sum(before.values())} -> {sum(after.values())} descriptors"
                       + (f"; grown or gone: {grown}" if grown else ""))}


def check_zombies(samples: list[dict], rest_after: dict) -> dict:
    seen_twice = set()
    previous: set[int] = set()
    for s in samples:
        now = {p["pid"] for p in s["processes"] if p["state"] == "Z"}
        seen_twice |= now & previous
        previous = now
    at_rest_zombies = rest_after["zombies"]
    most = max((s["zombies"] for s in samples), default=0)
    return {"ok": not seen_twice and at_rest_zombies == 0,
            "detail": f"most at once {most}, in two samples running {len(seen_twice)}, "
                      f"at rest {at_rest_zombies}"}


def check_errors(result: dict, samples: list[dict], log: str) -> dict:
    problems = []
    locust = result["locust"]
    if locust["failures"]:
        problems.append(f"{locust['failures']} Locust failures: {locust['failure_list'][:3]}")
    if locust["requests"] == 0:
        problems.append("no request was made")
    if result["rest_after"]["responses_5xx"]:
        problems.append(f"{result['rest_after']['responses_5xx']} responses were 5xx")
    if "Traceback" in log:
        problems.append("a traceback in the server log")
    workers = [{p["pid"] for p in s["processes"] if p["role"] == "worker"}
               for s in result["samples"]]
    replaced = any(result["signals"].values())
    if workers and any(w != workers[0] for w in workers) and not replaced:
        problems.append("a worker was replaced during the run")
    sent = ", ".join(f"{n} {name}" for name, n in result["signals"].items())
    return {"ok": not problems, "detail": "; ".join(problems) or
            f"{locust['requests']} requests, 0 failures" + (f" (signals: {sent})" if sent else "")}


# output ------------------------------------------------------------------------------------
def summary(results: list[dict]) -> str:
    header = (f"{'model':10} {'requests':>9} {'req/s':>7} {'p99 ms':>7}  "
              f"{'rss growth (worst)':>18}  {'fds at rest':>12}  zombies  verdict")
    lines = [header]
    for r in results:
        c = r["checks"]
        growth = [g["growth"] or 0 for g in c["rss"].get("per_process", {}).values()]
        fds = f"{sum(c['fds']['rest_before'].values())}->{sum(c['fds']['rest_after'].values())}"
        failed = [name for name, v in c.items() if not v["ok"]]
        lines.append(f"{r['model']:10} {r['locust']['requests']:>9} "
                     f"{r['locust']['requests_per_second']:>7} {r['locust']['p99_ms']:>7.0f}  "
                     f"{max(growth, default=0):>+18.1%}  {fds:>12}  "
                     f"{'ok' if c['zombies']['ok'] else 'FAIL':7}  "
                     f"{'ok' if not failed else 'FAIL: ' + ', '.join(failed)}")
        for name in failed:
            lines.append(f"    {name}: {c[name]['detail']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="wizgy-soak-") as tmp:
        for model in args.models:
            print(f"soak: {model} for {args.duration:g} s ({args.users} users, "
                  f"{args.app} app)...", flush=True)
            results.append(soak(model, args, Path(tmp)))
            print("   ", summary(results[-1:]).splitlines()[1], flush=True)
            if results[-1]["signals"]:
                print("    signals sent:", results[-1]["signals"], "-",
                      results[-1]["checks"]["errors"]["detail"], flush=True)
    ok = all(v["ok"] for r in results for v in r["checks"].values())
    print()
    print(summary(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(json.dumps({"ok": ok, "settings": settings, "results": results},
                                        indent=1))
        print(f"\nsamples and verdicts: {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
