"""`make bench`: the operator's figures of docs/benchmarks.md, each next to its target, in one run.

    .venv/bin/python bench/run_all.py [--soak SECONDS] [--runs N] [--only scale memory soak power]
    make bench                 # 1,000-run burst, memory at 0/100/1,000 runs, a 5-minute soak, power
    make bench SOAK=1800       # the 30-minute soak

Starts the bed if it is not up (and stops it afterwards in that case, like the tests; KTO_KEEP_BED=1
keeps it). Each benchmark is its own script in bench/ (run alone for details); this runs them in turn,
collects their JSON under .bed/bench/run-all-<time>/ and prints the summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run(script: str, args: list[str], out: Path) -> dict[str, Any] | None:
    """One benchmark script, its output streamed; its --json figures, or None if it failed."""
    cmd = [sys.executable, str(BENCH / script), *args, "--json", str(out)]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO)
    print(f"=== {script}: exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    if rc != 0 or not out.exists():
        return None
    return dict(json.loads(out.read_text()))


Row = tuple[str, str, str, bool | None]


def scale_rows(f: dict[str, Any]) -> list[Row]:
    op, raw, mlflow = f["operator"], f["raw"], f["mlflow"]
    return [
        ("burst: operator runs/s vs raw Job creates/s", f"{op['runs_per_s']} / {raw['jobs_per_s']} = {f['ratio']:.2f}",
         ">= 0.5", f["ratio"] >= 0.5),
        ("burst: operator runs/s vs MLflow create_run/s", f"{op['runs_per_s']} / {mlflow['runs_per_s']} = "
         f"{op['runs_per_s'] / mlflow['runs_per_s']:.2f}", "(the ceiling)", None),
        ("burst: submit->Job p50 / p95 / p99", f"{op['p50_s']} / {op['p95_s']} / {op['p99_s']} s", "p95 <= 2 s",
         op["p95_s"] <= 2.0),
    ]


def memory_rows(f: dict[str, Any]) -> list[Row]:
    rss = {int(k): v for k, v in f["rss_mb"].items()}
    top = max(rss)
    return [("RSS at " + " / ".join(str(k) for k in sorted(rss)) + " runs",
             " / ".join(f"{rss[k]}" for k in sorted(rss)) + " MB", "<= 150 MB at 1,000", rss[top] <= 150)]


def soak_rows(f: dict[str, Any]) -> list[Row]:
    return [(f"RSS drift, {f['seconds'] / 60:.0f}-min soak ({f['runs_done']} runs)",
             f"{f['baseline_mb']:.1f} -> {f['end_mb']:.1f} MB ({100 * f['drift']:+.1f} %)", "< 10 % (30 min)",
             f["drift"] < 0.10)]


def power_rows(f: dict[str, Any]) -> list[Row]:
    s = f["summary"]
    rows: list[Row] = [(f"power: {k} (median / max)", f"{s[k]['median']:.2f} / {s[k]['max']:.2f} s", "<= 3 s",
                        s[k]["max"] <= 3.0) for k in ("sleep_s", "wake_restored_s")]
    # Pods Ready again is the node agent starting 50 processes, not the switch: no target.
    k = "wake_ready_s"
    return [*rows, (f"power: {k} (median / max)", f"{s[k]['median']:.2f} / {s[k]['max']:.2f} s", "(informational)",
                    None)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak", type=float, default=300.0, help="soak seconds (default 300; the target is 1800)")
    parser.add_argument("--runs", type=int, default=1000, help="burst size and top memory level")
    parser.add_argument("--only", nargs="+", choices=["scale", "memory", "soak", "power"],
                        default=["scale", "memory", "soak", "power"])
    args = parser.parse_args(argv)

    from kto_bed import cli
    from kto_bed.controlplane import Ports
    from kto_bed.paths import BedPaths

    paths, ports = BedPaths.default(), Ports.from_env()
    was_up = cli.status_quiet(paths)
    if not was_up:
        cli.up(paths, ports)
    out = REPO / ".bed" / "bench" / f"run-all-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    plan: dict[str, tuple[str, list[str], Callable[[dict[str, Any]], list[Row]]]] = {
        "scale": ("bench_operator_scale.py", ["--runs", str(args.runs), "--profile"], scale_rows),
        "memory": ("bench_operator_memory.py", ["levels", "--runs", str(min(100, args.runs)), str(args.runs)],
                   memory_rows),
        "soak": ("bench_operator_memory.py", ["soak", "--seconds", str(args.soak)], soak_rows),
        "power": ("bench_power.py", ["--deployments", "50", "--rounds", "3"], power_rows),
    }
    rows: list[Row] = []
    try:
        for name in args.only:
            script, script_args, to_rows = plan[name]
            figures = run(script, script_args, out / f"{name}.json")
            rows.extend(to_rows(figures) if figures else [(name, "FAILED (see its output above)", "", False)])
    finally:
        if not was_up and not os.environ.get("KTO_KEEP_BED"):
            cli.down(paths)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = ["| figure | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'' if ok is None else ('yes' if ok else 'no')} |" for a, b, c, ok in rows]
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    print(f"\n{table}\n\n({os.cpu_count()} CPUs, load average now {load}; figures in {out})")
    # A missed target is a figure, not an error; a benchmark that could not run is.
    return 1 if any(value.startswith("FAILED") for _, value, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
