#!/usr/bin/env python3
"""wizgy's bench harness: every server, the same app, the same load, side by side.

    python3 loadtest/bench/run.py [--quick] [--scenarios a,b] [--servers x,y]
                                  [--rounds R] [--duration S] [--warmup S]
                                  [--python PY] [--pypy PY]

Control flow: build or reuse the bench venvs (bench_venv.py; the PyPy one only when a
PyPy server is asked for) unless --python / --pypy name interpreters to use instead;
find which servers each interpreter can import; then for each scenario, for each
round, for each server in turn (A B C A B C ...): start the server pinned to CPU 0 in
its own process group, wait for its port and a 2xx on the scenario's path, warm it up
with one-second wrk runs (their req/s are the warm-up samples), then run wrk pinned to
CPU 1 while watching the server's CPU time and RSS (measure.py), and stop the whole
process group. The runs are summarized per scenario (report.py): median/min/max req/s
over the rounds, p50 and p99 latency, errors, CPU, peak RSS, warm-up (the second in
which the server first reached 90% of its measured req/s), and ratios to gunicorn sync
and to wizgy. Writes results/<timestamp>.json, results/latest.md and
results/latest.png.

The machine is shared: the load average at start, end and of every run is recorded,
since other work on these two cores moves the numbers. Compare ratios within one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SERVER_DIR = os.path.join(os.path.dirname(os.path.dirname(BENCH_DIR)), "server")
sys.path.insert(0, BENCH_DIR)

import bench_venv
import contenders
import measure
import report
import scenarios

SERVER_CPU, CLIENT_CPU = "0", "1"
PYPY_WARMUP = 5  # seconds: PyPy's JIT reaches 90% of its speed within them (warm-up column)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 3 s, hello only (unless --scenarios is given)",
    )
    parser.add_argument(
        "--scenarios", help="comma-separated; default all: " + ",".join(scenarios.BY_NAME)
    )
    parser.add_argument(
        "--servers",
        help="comma-separated; default "
        + ",".join(contenders.DEFAULT)
        + "; known: "
        + ",".join(contenders.BY_NAME),
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3)")
    parser.add_argument("--duration", type=int, help="seconds of wrk per run (default 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        help="seconds of wrk before each run, the same for every server (default 1; "
        f"{PYPY_WARMUP} when a PyPy server runs: its JIT needs them)",
    )
    parser.add_argument(
        "--python",
        help="interpreter that runs the CPython servers, instead of the "
        "bench venv (servers it cannot import are reported)",
    )
    parser.add_argument(
        "--pypy",
        help="interpreter that runs the *-pypy servers, instead of the PyPy bench venv",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(BENCH_DIR, "results"),
        help="folder for <timestamp>.json, latest.md, latest.png",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.scenarios = split(args.scenarios) or (
        scenarios.QUICK if quick else list(scenarios.BY_NAME)
    )
    args.servers = split(args.servers) or list(contenders.DEFAULT)
    args.rounds = args.rounds or (1 if quick else 3)
    args.duration = args.duration or (3 if quick else 5)
    for name in args.scenarios:
        if name not in scenarios.BY_NAME:
            parser.error(f"unknown scenario {name!r}")
    for name in args.servers:
        if name not in contenders.BY_NAME:
            parser.error(f"unknown server {name!r}")
    args.runtimes = sorted({contenders.BY_NAME[name].runtime for name in args.servers})
    if args.warmup is None:
        args.warmup = PYPY_WARMUP if "pypy" in args.runtimes else 1
    return args


def split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def importable(python: str, modules: list[str]) -> dict[str, bool]:
    code = (
        "import importlib.util, json, sys; print(json.dumps({m: "
        "importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [python, "-c", code, *modules], check=False, capture_output=True, text=True, timeout=60
    )
    return json.loads(done.stdout)


def interpreters(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict]]:
    """({runtime: interpreter}, {runtime: install record}) for the runtimes asked for."""
    given = {"cpython": args.python, "pypy": args.pypy}
    pythons, installs = {}, {}
    for runtime in args.runtimes:
        if given[runtime]:
            pythons[runtime], installs[runtime] = given[runtime], {}
        else:
            installs[runtime] = bench_venv.ensure(lambda m: print(m, flush=True), runtime)
            pythons[runtime] = bench_venv.python(runtime)
    return pythons, installs


def runtime_of(python: str) -> str:
    """What /status says of that interpreter: "CPython 3.11.7", "PyPy 7.3.11 (Python 3.9)"."""
    done = subprocess.run(
        [python, "-c", "from wizgy.status import runtime; print(runtime())"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=SERVER_DIR),
    )
    return done.stdout.strip() or f"{python}: unknown"


def availability(pythons: dict[str, str], names: list[str], installs: dict) -> dict[str, dict]:
    """{server: {"ok": bool, "reason": ..., "note": ...}} for the interpreters in use."""
    out = {}
    for runtime, python in pythons.items():
        mine = [n for n in names if contenders.BY_NAME[n].runtime == runtime]
        out.update(available_on(python, mine, installs[runtime]))
    return {name: out[name] for name in names}


def available_on(python: str, names: list[str], installs: dict) -> dict[str, dict]:
    if not os.path.exists(python) and not shutil.which(python):
        return {n: {"ok": False, "reason": f"not installed: no {python}"} for n in names}
    found = importable(python, sorted({contenders.BY_NAME[n].module for n in names}))
    out = {}
    for name in names:
        module = contenders.BY_NAME[name].module
        install = installs.get(module, {})
        if found[module]:
            out[name] = {"ok": True, "note": install.get("note", "")}
        else:
            reason = install.get("reason") or f"{module} not importable by {python}"
            out[name] = {"ok": False, "reason": f"not installed: {reason}"}
    return out


def time_wait() -> int | None:
    """TCP sockets in TIME_WAIT (Connection: close runs leave tens of thousands)."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    words = line.split()
                    return int(words[words.index("tw") + 1])
    except (OSError, ValueError):
        pass
    return None


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def raise_nofile() -> None:
    """idle-1000 needs over a thousand descriptors in the server and the helper."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Harness:
    def __init__(self, args: argparse.Namespace, pythons: dict[str, str], pin: bool) -> None:
        self.args = args
        self.pythons = pythons
        self.pin = pin
        self.logdir = tempfile.mkdtemp(prefix="wizgy-bench-")
        self.live: list[measure.Server] = []

    def run_one(self, scenario: scenarios.Scenario, name: str, round_no: int) -> dict:
        record = {
            "scenario": scenario.name,
            "server": name,
            "round": round_no,
            "loadavg": loadavg(),
            "time_wait": time_wait(),
        }
        contender = contenders.BY_NAME[name]
        if contender.workers_max is not None and scenario.workers > contender.workers_max:
            record["status"] = f"n/a: runs at most {contender.workers_max} worker(s)"
            return record
        if (why := dict(contender.skips).get(scenario.name)) is not None:
            record["status"] = f"n/a: {why}"
            return record
        port = measure.free_port()
        server = self.server(contender, scenario, port, round_no)
        self.live.append(server)
        try:
            server.start()
            record["pid"] = server.proc.pid
            server.wait_ready(scenario.path, "POST" if scenario.body_bytes else "GET")
            record.update(self.drive(scenario, server, port))
            record["status"] = "ok"
        except (measure.ServerFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
            record["status"] = " ".join(f"failed: {exc}".split())[:300]
        finally:
            server.stop()
            self.live.remove(server)
        return record

    def server(
        self,
        contender: contenders.Contender,
        scenario: scenarios.Scenario,
        port: int,
        round_no: int,
    ) -> measure.Server:
        fill = {
            "python": self.pythons[contender.runtime],
            "bench": BENCH_DIR,
            "host": "127.0.0.1",
            "port": port,
            "bind": f"127.0.0.1:{port}",
            "workers": scenario.workers,
            "app": scenario.app,
            "appdir": scenario.appdir,
        }
        argv = [word.format(**fill) for word in shlex.split(contender.command)]
        if self.pin and scenario.pinned:
            argv = ["taskset", "-c", SERVER_CPU] + argv
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = os.path.join(self.logdir, f"{scenario.name}-{contender.name}-{round_no}.log")
        return measure.Server(argv, scenario.appdir, port, log, env)

    def drive(self, scenario: scenarios.Scenario, server: measure.Server, port: int) -> dict:
        pinned = self.pin and scenario.pinned
        cpu = CLIENT_CPU if pinned else None
        threads = 1 if pinned or scenario.connections < 2 else 2
        url = f"http://127.0.0.1:{port}{scenario.path}"
        script = os.path.join(BENCH_DIR, "report.lua")
        out = {}
        helper = None
        if scenario.idle:
            seconds = self.args.warmup + self.args.duration + 2
            helper = measure.IdleHelper(
                sys.executable,
                os.path.join(BENCH_DIR, "idle.py"),
                port,
                scenario.idle,
                seconds,
                cpu,
            )
        try:
            out["warmup_rps"] = self.warm_up(scenario, url, threads, script, cpu)
            argv = measure.wrk_argv(
                url,
                self.args.duration,
                scenario.connections,
                threads,
                scenario.headers,
                script,
                cpu,
            )
            watch = measure.Watch(server.proc.pid)
            watch.start()
            try:
                out["wrk"] = measure.run_wrk(argv, scenario.body_bytes, self.args.duration)
            finally:
                watch.stop()
            out["watch"] = watch.result()
            if out["wrk"]["requests"] == 0:  # e.g. waitress refusing past its connection_limit
                raise RuntimeError(
                    f"no request completed in {self.args.duration} s "
                    f"(wrk errors {out['wrk']['errors']})"
                )
            out["wrk_command"] = shlex.join(argv)
            if helper:
                out["idle"] = helper.result(timeout=self.args.warmup + 10)
                out["idle"]["ready"] = helper.ready
        finally:
            if helper:
                helper.stop()
        return out

    def warm_up(self, scenario, url: str, threads: int, script: str, cpu) -> list[float]:
        """--warmup one-second wrk runs: the req/s of each second, the warm-up samples."""
        samples = []
        for _ in range(self.args.warmup):
            argv = measure.wrk_argv(
                url, 1, scenario.connections, threads, scenario.headers, script, cpu
            )
            result = measure.run_wrk(argv, scenario.body_bytes, 1)
            samples.append(round(result["requests"] / (result["duration_us"] / 1e6), 1))
        return samples

    def stop_all(self) -> None:
        for server in list(self.live):
            server.stop()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found (apt-get install wrk)")
    raise_nofile()
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    pythons, installs = interpreters(args)
    available = availability(pythons, args.servers, installs)
    harness = Harness(args, pythons, pin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs

    started = datetime.datetime.now()
    meta = {
        "timestamp": started.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "server_python": pythons.get("cpython") or bench_venv.python(),  # draws the chart
        "server_pythons": pythons,
        "runtimes": {runtime: runtime_of(python) for runtime, python in pythons.items()},
        "pinned": pin,
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "scenarios": args.scenarios,
        "servers": args.servers,
        "loadavg_start": loadavg(),
        "command": "python3 loadtest/bench/run.py " + shlex.join(argv),
        "wrk": subprocess.run(
            ["wrk", "-v"], check=False, capture_output=True, text=True
        ).stdout.split("\n")[0],
        "note": "other work shares this machine's cores; see loadavg per run",
        "availability": available,
        "server_notes": {n: contenders.BY_NAME[n].note for n in args.servers},
    }
    print(
        f"bench: {len(args.scenarios)} scenario(s) x {args.rounds} round(s) x "
        f"{len(args.servers)} server(s), {args.duration:g} s each; load average "
        f"{meta['loadavg_start']}; server logs in {harness.logdir}",
        flush=True,
    )
    runs = []
    try:
        for name in args.scenarios:
            scenario = scenarios.BY_NAME[name]
            for round_no in range(1, args.rounds + 1):
                for server in args.servers:
                    runs.append(one(harness, scenario, server, round_no, available[server]))
    finally:
        harness.stop_all()
    meta["loadavg_end"] = loadavg()
    meta["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return write(args, meta, runs)


def one(harness: Harness, scenario, server: str, round_no: int, available: dict) -> dict:
    if not available["ok"]:
        return {
            "scenario": scenario.name,
            "server": server,
            "round": round_no,
            "status": available["reason"],
        }
    record = harness.run_one(scenario, server, round_no)
    if record["status"] == "ok":
        rps = record["wrk"]["requests"] / (record["wrk"]["duration_us"] / 1e6)
        shown = f"{rps:,.0f} req/s, CPU {record['watch']['cpu_percent']:.0f}%"
    else:
        shown = record["status"]
    print(
        f"  {scenario.name} round {round_no} {server}: {shown} (load {record['loadavg'][0]})",
        flush=True,
    )
    return record


def write(args: argparse.Namespace, meta: dict, runs: list[dict]) -> int:
    reference = next(
        (s for s in args.servers if s == "wizgy"),
        next((s for s in args.servers if s.startswith("wizgy")), None),
    )
    summary = report.summarize(runs, contenders.BASELINE, reference)
    meta["reference"] = reference
    whats = {s.name: s.what for s in scenarios.SCENARIOS}
    print(report.text_table(summary, whats))
    notes = [f"  {n}: {v['note']}" for n, v in meta["availability"].items() if v.get("note")]
    notes += [f"  {n}: {t}" for n, t in meta["server_notes"].items() if t]
    if notes:
        print("notes:\n" + "\n".join(notes))
    os.makedirs(args.out, exist_ok=True)
    stamp = meta["timestamp"].replace(" ", "T").replace(":", "")
    results_path = os.path.join(args.out, f"{stamp}.json")
    with open(results_path, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(report.markdown(summary, whats, meta))
    png = os.path.join(args.out, "latest.png")
    done = subprocess.run(
        [meta["server_python"], os.path.join(BENCH_DIR, "report.py"), "chart", results_path, png],
        check=False,
        capture_output=True,
        text=True,
    )
    chart = (
        png
        if done.returncode == 0
        else f"not drawn ({(done.stderr.strip().splitlines() or ['?'])[-1]})"
    )
    print(
        f"results: {results_path}\ntable:   {os.path.join(args.out, 'latest.md')}\nchart:   {chart}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
