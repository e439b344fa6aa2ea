"""Requests per server CPU-second, from run.py results files.

    python3 loadtest/bench/cpucost.py loadtest/bench/results/<timestamp>.json [more.json]

run.py records, for every run, the requests wrk completed and the CPU-seconds (utime +
stime from /proc) the server's processes spent meanwhile. Their quotient is what one
core of the server can serve when nothing else limits it: on a shared machine it moves
far less than req/s, which also carries wrk's speed and the neighbours' load. Prints,
per scenario and server, the median over the rounds of all the files given (min-max) as requests
per CPU-second and microseconds of server CPU per request, beside the median req/s.
"""

from __future__ import annotations

import json
import statistics
import sys


def main(paths: list[str]) -> None:
    runs = []
    for path in paths:
        with open(path) as f:
            runs += json.load(f)["runs"]
    cells: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for run in runs:
        if run.get("status") == "ok" and run["watch"]["cpu_seconds"] > 0:
            rate = run["wrk"]["requests"] / run["watch"]["cpu_seconds"]
            rps = run["wrk"]["requests"] / (run["wrk"]["duration_us"] / 1e6)
            cells.setdefault((run["scenario"], run["server"]), []).append((rate, rps))
    loads = [run["loadavg"][0] for run in runs if "loadavg" in run]
    print(f"1-minute load average over the runs: {min(loads)}-{max(loads)} "
          f"(median {statistics.median(loads):.1f})")
    print(f"{'scenario':<14} {'server':<12} {'req per CPU-s':>26} {'us/req':>7} {'req/s':>8}")
    for (scenario, server), rounds in cells.items():
        rates = [rate for rate, _ in rounds]
        median = statistics.median(rates)
        spread = f"({min(rates):,.0f}-{max(rates):,.0f})"
        print(f"{scenario:<14} {server:<12} {median:>10,.0f} {spread:>15} "
              f"{1e6 / median:>7.1f} {statistics.median(r for _, r in rounds):>8,.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
