"""Operator memory: RSS with 0, 100 and 1,000 TrainingRuns present, and RSS drift in a soak with runs churning.

    .venv/bin/python bench/bench_operator_memory.py levels [--runs 100 1000] [--repeat 3] [--settle 30]
        [--tracemalloc]
    .venv/bin/python bench/bench_operator_memory.py soak [--seconds 1800] [--in-flight 4] [--tracemalloc]

Needs the bed (`make bed`). The operator is `python -m kto_operator --namespace NS` (the integration tests'
Operator); RSS is /proc/<pid>/status VmRSS in MB (10^6 bytes).

levels: a namespace with a ResourceQuota of 0 pods (Jobs exist, no pod runs). RSS after the operator has
  idled `--settle` seconds with 0 runs, then after each step up to `--runs` (every run has its Job, then
  `--settle` seconds of resyncs). `--repeat` runs it all again with a fresh namespace and operator (the
  figure is the median). Target (bench/targets.toml): <= 100 MB at 1,000. `--tracemalloc` also writes the
  operator's biggest allocation sites at each level (bench/memtrace; slows it and inflates RSS: a
  diagnosis, not a figure).
soak: a namespace where pods run (the test-only trainer image, sleeping 1 s); `--in-flight` runs at a time,
  each deleted once it ended and replaced by a new one, for `--seconds`. RSS sampled every 10 s. Drift =
  median RSS of the last 10 % of the soak against the median of the first 10 % after a warm-up (the first
  20 % of the soak, at least 60 s: imports, caches and pools fill up). Target: < 10 %. An object census
  (types by count and bytes) is written after the warm-up and at the end (census.txt); `--tracemalloc` as
  above.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException
from operator_bench_common import (
    GROUP,
    PLURAL,
    RESULTS,
    VERSION,
    BenchNamespace,
    JsonJobWatcher,
    Operator,
    apply_crds,
    load_note,
    open_bed,
    poll,
    rss_mb,
    settle,
    submit_runs,
    tracebacks,
    trainingrun,
    write_json,
)
from urllib3.exceptions import HTTPError

TERMINAL = ("Succeeded", "Failed", "Cancelled")
MEMTRACE = Path(__file__).resolve().parent / "memtrace"


def _memtrace_path() -> str:
    """bench/memtrace first, then the caller's PYTHONPATH: the operator runs the code the bench was started with
    (a checkout's own `operator/`), not whichever one the editable install points to."""
    return os.pathsep.join(p for p in (str(MEMTRACE), os.environ.get("PYTHONPATH", "")) if p)


def _dumped(op: Operator, sig: int, path: Path, marker: str, timeout: float = 300.0) -> None:
    """Send `sig` and wait until the operator has appended one more `marker` section to `path`: a dump of a
    large heap takes seconds, and an operator stopped meanwhile writes nothing."""
    def sections() -> int:
        return path.read_text().count(marker) if path.exists() else 0

    before = sections()
    assert op.proc is not None
    op.proc.send_signal(sig)
    poll(lambda: sections() > before or not op.alive(), timeout, f"{path.name} written", 0.5)


def levels(bed: Any, steps: list[int], settle_s: float, trace: bool, out: Path) -> dict[str, Any]:
    ns = BenchNamespace(bed, "bench-mem", no_pods=True)
    experiment = f"bench-mem-{ns.name}"
    # Always the (cheap) object census on SIGUSR2; tracemalloc only when asked.
    env = {"PYTHONPATH": _memtrace_path(), "KTO_GC_CENSUS_OUT": str(out / "census.txt")}
    if trace:
        env["KTO_TRACEMALLOC_OUT"] = str(out / "tracemalloc.txt")
    out.mkdir(parents=True, exist_ok=True)
    op = Operator(bed, ns.name, out, env=env)
    figures: dict[str, Any] = {"rss_mb": {}, "hwm_mb": {}}
    try:
        op.start()
        assert op.proc is not None
        watcher = JsonJobWatcher(bed.api(), ns.name)
        watcher.start()
        watcher.ready.wait(30)

        def measure(level: int) -> None:
            rss, hwm = settle(op, settle_s)
            figures["rss_mb"][level], figures["hwm_mb"][level] = rss, hwm
            print(f"  {level:5d} TrainingRuns: RSS {rss:6.1f} MB (peak so far {hwm:.1f} MB)", flush=True)
            _dumped(op, signal.SIGUSR2, out / "census.txt", "-- census:")
            if trace:
                _dumped(op, signal.SIGUSR1, out / "tracemalloc.txt", "traced now")

        measure(0)
        present = 0
        for level in steps:
            names = [f"mem-{i:04d}" for i in range(present, level)]
            submit_runs(ns.custom, ns.name, names, experiment, workers=8)
            present = level
            poll(lambda lvl=level: watcher.count() >= lvl or not op.alive(), 900, f"{level} Jobs", 0.5)
            measure(level)
        watcher.stop.set()
        figures["operator_tracebacks"] = tracebacks(op.log())
        rss = figures["rss_mb"]
        top = max(steps)
        figures["per_run_kb"] = round((rss[top] - rss[0]) * 1000 / top, 1)
        return figures
    finally:
        op.stop()
        ns.delete()


def soak(bed: Any, seconds: float, in_flight: int, trace: bool, out: Path) -> dict[str, Any]:
    ns = BenchNamespace(bed, "bench-soak", no_pods=False)
    experiment = f"bench-soak-{ns.name}"
    out.mkdir(parents=True, exist_ok=True)
    # Object census (SIGUSR2) after the warm-up and at the end: what grows between them.
    env = {"PYTHONPATH": _memtrace_path(), "KTO_GC_CENSUS_OUT": str(out / "census.txt")}
    if trace:
        env["KTO_TRACEMALLOC_OUT"] = str(out / "tracemalloc.txt")
    op = Operator(bed, ns.name, out, env=env)
    warm = max(60.0, 0.2 * seconds)
    censused = False

    def dump() -> None:
        _dumped(op, signal.SIGUSR2, out / "census.txt", "-- census:")
        if trace:
            _dumped(op, signal.SIGUSR1, out / "tracemalloc.txt", "traced now")
    samples: list[tuple[float, float]] = []
    done = 0
    counter = 0

    def body(name: str, exp: str) -> dict[str, Any]:
        return trainingrun(name, exp, seconds=1.0)

    try:
        op.start()
        assert op.proc is not None
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < seconds:
            assert op.alive(), f"operator died:\n{op.log()[-3000:]}"
            try:
                done, counter = churn(ns, in_flight, done, counter, experiment, body)
            except (ApiException, HTTPError) as err:  # the bed's API server restarted by someone: go on
                print(f"  (churn step failed: {str(err).splitlines()[0][:200]})", flush=True)
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - start, rss_mb(op.proc.pid)[0]))
                next_sample += 10
                if not censused and samples[-1][0] >= warm:
                    dump()
                    censused = True
                if len(samples) % 6 == 0:
                    print(f"  {samples[-1][0]:6.0f} s: RSS {samples[-1][1]:.1f} MB, {done} runs done", flush=True)
            time.sleep(1.0)  # churn pacing, not an assertion
        dump()
        after = [rss for t, rss in samples if t >= warm]
        tenth = max(1, len(after) // 10)
        base, end = statistics.median(after[:tenth]), statistics.median(after[-tenth:])
        return {"seconds": seconds, "runs_done": done, "in_flight": in_flight, "warmup_s": warm,
                "baseline_mb": base, "end_mb": end, "drift": round((end - base) / base, 4),
                "max_mb": max(r for _, r in samples), "samples": samples,
                "operator_tracebacks": tracebacks(op.log()), "census": str(out / "census.txt")}
    finally:
        op.stop()
        ns.delete()


def churn(ns: BenchNamespace, in_flight: int, done: int, counter: int, experiment: str,
          body: Callable[[str, str], dict[str, Any]]) -> tuple[int, int]:
    """Delete the runs that ended, submit new ones up to `in_flight`; (runs done, runs submitted)."""
    live = 0
    for item in ns.custom.list_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL)["items"]:
        meta = item["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        if (item.get("status") or {}).get("phase") in TERMINAL:
            ns.custom.delete_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL, meta["name"])
            done += 1
        else:
            live += 1
    names = [f"soak-{counter + i:05d}" for i in range(in_flight - live)]
    submit_runs(ns.custom, ns.name, names, experiment, workers=4, body=body)
    return done, counter + len(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lv = sub.add_parser("levels", help="RSS at 0, 100, 1,000 TrainingRuns")
    lv.add_argument("--runs", type=int, nargs="+", default=[100, 1000])
    lv.add_argument("--settle", type=float, default=30.0)
    lv.add_argument("--repeat", type=int, default=1, help="fresh namespace and operator each time; median taken")
    lv.add_argument("--tracemalloc", action="store_true")
    sk = sub.add_parser("soak", help="RSS drift with runs churning")
    sk.add_argument("--seconds", type=float, default=1800.0)
    sk.add_argument("--in-flight", type=int, default=4)
    sk.add_argument("--tracemalloc", action="store_true")
    for p in (lv, sk):
        p.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    bed = open_bed()
    apply_crds(bed)
    out = RESULTS / f"memory-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"operator memory, {args.command}; {load_note()}", flush=True)
    if args.command == "levels":
        top = max(args.runs)
        repeats = []
        for i in range(args.repeat):
            one = levels(bed, sorted(args.runs), args.settle, args.tracemalloc, out / f"repeat-{i + 1}")
            repeats.append(one)
            print(f"\nOperator RSS, run {i + 1} of {args.repeat}: "
                  f"{', '.join(f'{k} runs {v} MB' for k, v in one['rss_mb'].items())}; {one['per_run_kb']} kB per "
                  f"run; tracebacks in its log: {one['operator_tracebacks']}", flush=True)
        tops = [r["rss_mb"][top] for r in repeats]
        figures = {"top": top, "repeats": repeats, "rss_top_median_mb": statistics.median(tops)}
        print(f"  at {top} TrainingRuns: median {figures['rss_top_median_mb']} MB of {tops} (target <= 100 MB)")
    else:
        figures = soak(bed, args.seconds, args.in_flight, args.tracemalloc, out)
        print(f"\nSoak {figures['seconds']:.0f} s, {figures['runs_done']} runs churned "
              f"({figures['in_flight']} in flight): RSS {figures['baseline_mb']:.1f} MB after warm-up -> "
              f"{figures['end_mb']:.1f} MB at the end, drift "
              f"{100 * figures['drift']:+.1f} % (target < 10 %); "
              f"max {figures['max_mb']:.1f} MB; tracebacks in its log: {figures['operator_tracebacks']}")
    write_json(args.json, figures)
    print(f"(operator log under {out}; {load_note()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
