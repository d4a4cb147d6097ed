"""`make bench`: every benchmark (operator, power, trainer), every figure next to its target, one exit code.

    .venv/bin/python bench/run_all.py [--soak SECONDS] [--runs N] [--only latency scale ...] [--publish]
    make bench                 # all of it: 1,000-run burst, memory x3, a 5-minute soak, power, pod start, trainer
    make bench SOAK=1800       # with the 30-minute soak
    make bench PUBLISH=1       # also bench/results/results.json and the tables of docs/benchmarks.md
    .venv/bin/python bench/run_all.py --resume .bed/bench/run-all-<time>/results.json   # rerun what failed
    .venv/bin/python bench/run_all.py --resume <results.json> --rerun latency scale      # and these

Starts the bed if it is not up (and stops it afterwards in that case, like the tests; KTO_KEEP_BED=1 keeps
it). Each benchmark is its own script in bench/ (run alone for details); this runs them in turn, reads the
JSON each one writes, judges each figure against bench/targets.toml, prints the summary table and writes
results.json under .bed/bench/run-all-<time>/.

Exit code: 0 every gated target met; 1 a gated target missed; 2 a benchmark failed (or gave no value for a
gated figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:  # run as a file: its siblings are modules
    sys.path.insert(0, str(BENCH))

import render_docs  # noqa: E402
from figures import EXTRACTORS  # noqa: E402
from targets import Measured, exit_code, load_targets, results_document, summary_table  # noqa: E402

PUBLISHED = BENCH / "results" / "results.json"
DOC = REPO / "docs" / "benchmarks.md"
# The latency figure is "one run at a time on an idle bed": it runs first, before any burst has loaded it.
ORDER = ("latency", "scale", "memory", "soak", "power", "podstart", "s3", "input", "train", "multiworker")


def plan(args: argparse.Namespace) -> dict[str, list[str]]:
    """Benchmark name -> its script and arguments (each also takes --json PATH)."""
    low = min(100, args.runs)
    levels = [str(low)] + ([str(args.runs)] if args.runs > low else [])
    return {
        "latency": ["bench_operator_latency.py", "--runs", str(args.latency_runs)],
        "scale": ["bench_operator_scale.py", "--runs", str(args.runs), "--profile"],
        "memory": ["bench_operator_memory.py", "levels", "--runs", *levels, "--repeat", str(args.memory_repeat)],
        "soak": ["bench_operator_memory.py", "soak", "--seconds", str(args.soak)],
        "power": ["bench_power.py", "--deployments", "50", "--rounds", "3"],
        "podstart": ["bench_pod_start.py", "--image", "kto-trainer:0.1.0", "--pods", "3"],
        "s3": ["bench_s3_fetch.py", "--count", str(args.s3_count)],
        "input": ["bench_input_pipeline.py"],
        "train": ["bench_train_speed.py"],
        "multiworker": ["bench_multiworker.py"],
    }


def run(command: list[str], out: Path) -> tuple[int, float, dict[str, Any] | None]:
    """One benchmark script, its output streamed: (exit code, seconds, its --json figures or None)."""
    cmd = [sys.executable, str(BENCH / command[0]), *command[1:], "--json", str(out)]
    print(f"\n=== {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO)
    seconds = round(time.monotonic() - started, 1)
    print(f"=== {command[0]}: exit {rc} after {seconds:.0f} s", flush=True)
    output = dict(json.loads(out.read_text())) if rc == 0 and out.exists() else None
    return rc, seconds, output


def without_note(argv: list[str]) -> list[str]:
    """The command line as results.json records it: the note is kept apart."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else "unknown"


def kept(path: Path, only: list[str], meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The benchmarks of an earlier run that succeeded (in `only`), each with when and at which commit it was
    measured; `meta` notes the run resumed."""
    earlier = json.loads(path.read_text())
    was = earlier["meta"]
    ok = {name: {**bench, "measured": render_docs.measured_at(earlier, name)}
          for name, bench in earlier["benches"].items() if bench.get("exit") == 0 and name in only}
    meta["resumed"] = {"date": was["date"], "commit": was["commit"], "load_start": was["load_start"],
                       "minutes": was.get("minutes"), "kept": list(ok), "args": was.get("args")}
    print(f"=== resuming the run of {was['date']}: keeping {', '.join(ok) or 'nothing'}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak", type=float, default=300.0, help="soak seconds (default 300; the target is 1800)")
    parser.add_argument("--runs", type=int, default=1000, help="burst size and top memory level")
    parser.add_argument("--latency-runs", type=int, default=40, help="runs of the one-at-a-time latency bench")
    parser.add_argument("--memory-repeat", type=int, default=3, help="memory levels runs (median taken)")
    parser.add_argument("--s3-count", type=int, default=2000, help="images fetched from S3")
    parser.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    parser.add_argument("--publish", action="store_true",
                        help=f"write {PUBLISHED.relative_to(REPO)} and regenerate the tables of docs/benchmarks.md")
    parser.add_argument("--resume", type=Path, metavar="RESULTS_JSON",
                        help="keep the benchmarks that succeeded in that earlier run (its outputs and times) and run "
                             "only the others; results.json records the run it resumed")
    parser.add_argument("--rerun", nargs="+", choices=ORDER, default=[],
                        help="with --resume: measure these again even where the earlier run succeeded")
    parser.add_argument("--note", default="", help="a line about this run kept in results.json (e.g. 'reduced')")
    args = parser.parse_args(argv)
    specs = load_targets()  # a broken targets.toml fails before an hour of benchmarks

    from kto_bed import cli
    from kto_bed.controlplane import Ports
    from kto_bed.paths import BedPaths

    paths, ports = BedPaths.default(), Ports.from_env()
    was_up = cli.status_quiet(paths)
    if not was_up:
        cli.up(paths, ports)
    out = REPO / ".bed" / "bench" / f"run-all-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(),
                            "cpus": os.cpu_count(), "load_start": [round(x, 1) for x in os.getloadavg()],
                            "args": without_note(sys.argv[1:] if argv is None else argv), "note": args.note}
    benches = kept(args.resume, [n for n in args.only if n not in args.rerun], meta) if args.resume else {}
    measured: dict[str, Measured] = {}
    commands = plan(args)
    started = time.monotonic()
    try:
        for name in (n for n in ORDER if n in args.only):
            if name not in benches:
                rc, seconds, output = run(commands[name], out / f"{name}.json")
                benches[name] = {"exit": rc, "seconds": seconds, "command": commands[name], "output": output,
                                 "measured": {"date": meta["date"], "commit": meta["commit"]}}
            output = benches[name]["output"]
            if output is not None:
                try:
                    measured.update(EXTRACTORS[name](output))
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                    print(f"=== {name}: its output lacks a figure ({err!r})", flush=True)
                    benches[name]["exit"] = f"unreadable output: {err!r}"
    finally:
        if not was_up and not os.environ.get("KTO_KEEP_BED"):
            cli.down(paths)
    meta["load_end"] = [round(x, 1) for x in os.getloadavg()]
    meta["minutes"] = round((time.monotonic() - started) / 60, 1)
    document = results_document(specs, measured, benches, meta)
    (out / "results.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    code = exit_code(document)
    print(f"\n{summary_table(document)}\n")
    print(f"({meta['cpus']} CPUs, load average {meta['load_start']} at the start, {meta['load_end']} at the end; "
          f"{meta['minutes']} min; figures in {out / 'results.json'})")
    if args.publish:
        PUBLISHED.parent.mkdir(parents=True, exist_ok=True)
        PUBLISHED.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        DOC.write_text(render_docs.update(DOC.read_text(), document))
        print(f"published: {PUBLISHED.relative_to(REPO)}, {DOC.relative_to(REPO)}")
    print({0: "every gated target met", 1: "a gated target was MISSED",
           2: "a benchmark FAILED"}[code] + f" (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
