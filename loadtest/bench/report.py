"""Turning runs into the summary, the text table, the Markdown table and the chart.

`python report.py chart RESULTS.json OUT.png` draws the chart; it runs under the
bench venv's interpreter, which has matplotlib (the harness itself needs only the
standard library).
"""

from __future__ import annotations

import json
import statistics
import sys

COLUMNS = [
    "server",
    "rounds ok",
    "req/s",
    "min",
    "max",
    "p50 ms",
    "p99 ms",
    "errors",
    "CPU %",
    "RSS/worker MiB",
    "RSS total MiB",
    "warm-up s",
    "x gunicorn-sync",
    "x wizgy",
]


def summarize(runs: list[dict], baseline: str, reference: str | None) -> dict:
    """{scenario: [row per server, in run order]} from the per-run records."""
    cells: dict[tuple[str, str], list[dict]] = {}
    order: list[tuple[str, str]] = []
    for run in runs:
        key = (run["scenario"], run["server"])
        if key not in cells:
            cells[key] = []
            order.append(key)
        cells[key].append(run)
    table: dict[str, list[dict]] = {}
    for scenario, server in order:
        table.setdefault(scenario, []).append(summarize_cell(server, cells[scenario, server]))
    for rows in table.values():
        add_ratios(rows, baseline, reference)
    return table


def summarize_cell(server: str, runs: list[dict]) -> dict:
    good = [r for r in runs if r["status"] == "ok"]
    if not good:
        return {"server": server, "status": runs[0]["status"], "rounds": 0}
    rps = [r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6) for r in good]
    idle = [r["idle"].get("held_min") for r in good if r.get("idle")]
    warmups = [warmup_seconds(r.get("warmup_rps", []), rate) for r, rate in zip(good, rps)]
    return {
        "server": server,
        "status": "ok",
        "rounds": len(good),
        "rps_median": round(statistics.median(rps), 1),
        "rps_min": round(min(rps), 1),
        "rps_max": round(max(rps), 1),
        "p50_ms": round(statistics.median(r["wrk"]["latency_us"]["p50"] for r in good) / 1e3, 2),
        "p99_ms": round(statistics.median(r["wrk"]["latency_us"]["p99"] for r in good) / 1e3, 2),
        "non_2xx": sum(r["wrk"]["errors"]["status"] for r in good),
        "socket_errors": sum(
            sum(v for k, v in r["wrk"]["errors"].items() if k != "status") for r in good
        ),
        "cpu_percent": round(statistics.median(r["watch"]["cpu_percent"] for r in good), 1),
        "rss_worker_mib": max(r["watch"]["rss_worker_mib"] for r in good),
        "rss_total_mib": max(r["watch"]["rss_total_mib"] for r in good),
        "processes": max(r["watch"]["processes"] for r in good),
        # None: not within the warm-up's seconds (shown as "> N")
        "warmup_s": median_or_none(warmups),
        "warmup_window_s": max(len(r.get("warmup_rps", [])) for r in good),
        "idle_held_min": min(idle) if idle and None not in idle else None,
        "failed_rounds": [r["status"] for r in runs if r["status"] != "ok"],
    }


def warmup_seconds(samples: list[float], steady: float, share: float = 0.9) -> int | None:
    """The second of warm-up (1, 2, ...) in which req/s first reached `share` of the
    steady req/s measured after it; None if no second of the warm-up did."""
    return next((i for i, rate in enumerate(samples, 1) if rate >= share * steady), None)


def median_or_none(values: list[int | None]) -> float | None:
    """Median where None counts as longer than any number (a round that never got there)."""
    ranked = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    return None if None in middle else statistics.mean(middle)


def add_ratios(rows: list[dict], baseline: str, reference: str | None) -> None:
    medians = {row["server"]: row.get("rps_median") for row in rows}
    for row in rows:
        for key, other in (("x_baseline", baseline), ("x_wizgy", reference)):
            if row.get("rps_median") and medians.get(other):
                row[key] = round(row["rps_median"] / medians[other], 2)
            else:
                row[key] = None


IDLE_COLUMN = "idle held"


def columns(rows: list[dict]) -> list[str]:
    """The idle scenario adds how many idle connections each server held (fewest seen)."""
    return COLUMNS + (
        [IDLE_COLUMN] if any(r.get("idle_held_min") is not None for r in rows) else []
    )


def cells(row: dict, names: list[str] = COLUMNS) -> list[str]:
    if row["status"] != "ok":
        return [row["server"], row["status"]] + [""] * (len(names) - 2)

    def ratio(value):
        return "-" if value is None else f"{value:.2f}"

    errors = f"{row['non_2xx']}/{row['socket_errors']}"
    warmup = row.get("warmup_s")
    warmup = f"> {row.get('warmup_window_s', 0)}" if warmup is None else f"{warmup:g}"
    return [
        row["server"],
        f"{row['rounds']}/{row['rounds'] + len(row['failed_rounds'])}",
        f"{row['rps_median']:,.0f}",
        f"{row['rps_min']:,.0f}",
        f"{row['rps_max']:,.0f}",
        f"{row['p50_ms']:.2f}",
        f"{row['p99_ms']:.2f}",
        errors,
        f"{row['cpu_percent']:.0f}",
        f"{row['rss_worker_mib']:.1f}",
        f"{row['rss_total_mib']:.1f}",
        warmup,
        ratio(row["x_baseline"]),
        ratio(row["x_wizgy"]),
    ] + ([str(row.get("idle_held_min", "-"))] if IDLE_COLUMN in names else [])


def text_table(summary: dict, scenarios: dict) -> str:
    out = []
    for name, rows in summary.items():
        out.append(f"\n== {name}: {scenarios.get(name, '')}")
        names = columns(rows)
        body = [cells(row, names) for row in rows]
        ok = [c for c, row in zip(body, rows) if row["status"] == "ok"]
        widths = [max([len(names[i])] + [len(c[i]) for c in ok]) for i in range(len(names))]
        widths[0] = max([widths[0]] + [len(row["server"]) for row in rows])
        out.append(line(names, widths))
        for c, row in zip(body, rows):
            out.append(
                line(c, widths) if row["status"] == "ok" else f"{c[0].ljust(widths[0])}  {c[1]}"
            )
        out += failures(rows)
    return "\n".join(out) + "\n"


def failures(rows: list[dict]) -> list[str]:
    """A line for each server with rounds that failed: the summary uses the others."""
    return [
        f"  {row['server']}: {len(row['failed_rounds'])} round(s) failed, "
        f"first: {row['failed_rounds'][0][:160]}"
        for row in rows
        if row.get("failed_rounds")
    ]


def line(values: list[str], widths: list[int]) -> str:
    return "  ".join(
        v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))
    )


def markdown(summary: dict, scenarios: dict, meta: dict) -> str:
    out = [
        (
            f"Run {meta['timestamp']} on {meta['cpus']} CPUs ({meta['cpu_model']}), "
            f"Python {meta['python']}, servers on {', '.join(meta.get('runtimes', {}).values())}, "
            f"{meta['rounds']} round(s) of {meta['duration']:g} s after {meta['warmup']} s of "
            "warm-up, "
            f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end. "
            "Errors are non-2xx/socket errors; ratios are of median req/s; warm-up is the "
            "second of warm-up in which a server first reached 90% of its measured req/s."
        ),
        "",
        f"Reproduce: `{meta['command']}`",
        "",
    ]
    for name, rows in summary.items():
        names = columns(rows)
        out += [
            f"**{name}**: {scenarios.get(name, '')}",
            "",
            "| " + " | ".join(names) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(names) - 1)) + "|",
        ]
        for row in rows:
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells(row, names)) + " |")
        out += [""] + [line.strip() + "  " for line in failures(rows)] if failures(rows) else []
        out.append("")
    return "\n".join(out)


def color(server: str) -> str:
    """wizgy orange, wizgy on PyPy red; the peers blue, on PyPy green."""
    pypy = server.endswith("-pypy")
    if server.startswith("wizgy"):
        return "tab:red" if pypy else "tab:orange"
    return "tab:green" if pypy else "tab:blue"


def chart(results_path: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_path) as f:
        results = json.load(f)
    summary = results["summary"]
    names = list(summary)
    cols = 2 if len(names) > 1 else 1
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 0.45 * 8 * nrows + 1), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rows = summary[name]
        labels = [r["server"] for r in rows]
        medians = [r.get("rps_median") or 0 for r in rows]
        lows = [m - (r.get("rps_min") or 0) for m, r in zip(medians, rows)]
        highs = [(r.get("rps_max") or 0) - m for m, r in zip(medians, rows)]
        colors = [color(label) for label in labels]
        ax.barh(labels, medians, xerr=[lows, highs], color=colors, capsize=3)
        ax.invert_yaxis()
        for y, (value, high, row) in enumerate(zip(medians, highs, rows)):
            text = f"{value:,.0f}" if row["status"] == "ok" else row["status"][:40]
            ax.text(value + high, y, "  " + text, va="center", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("requests/s (median; bars: min-max)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, max([m + h for m, h in zip(medians, highs)] + [1]) * 1.35)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    meta = results["meta"]
    fig.suptitle(
        f"wizgy bench {meta['timestamp']}: {meta['rounds']} round(s) x "
        f"{meta['duration']:g} s, load avg {meta['loadavg_start']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if sys.argv[1:2] == ["chart"] and len(sys.argv) == 4:
        chart(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: report.py chart RESULTS.json OUT.png")
