"""Burst of N TrainingRuns against the operator, next to the raw pipeline doing the same work, in one run.

    .venv/bin/python bench/bench_operator_scale.py [--runs 1000] [--workers 8] [--profile] [--json out.json]

Needs the bed (`make bed`). Fresh namespaces, each with a ResourceQuota of 0 pods: Jobs are created, no
pod ever starts (the figure is the operator, not the node; the 2-core machine stays calm).
  1. raw Jobs: N Jobs (the manifests the operator would build) created directly with the Python client by
     `--workers` threads, then by one thread; rate = N / (last Job seen by a watch - first request);
  2. raw pipeline: N runs, `--workers` at a time, each one MLflow `runs/create` (the operator's own async REST
     client) then its Job carrying that run id: what any operator must do per run, without the operator;
  3. operator: `python -m kto_operator --namespace NS` (the integration tests' Operator); N TrainingRuns
     submitted by `--workers` threads; per run, latency = Job seen by a watch - just before its create
     request (p50/p95/p99/max), and sustained runs/s = N / (last Job seen - first request); its CPU.
Targets (bench/targets.toml): operator/raw pipeline >= 0.8, operator CPU <= 10 ms per run.
`--profile` samples the operator with py-spy during the burst and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kto_operator import jobs
from kto_operator.mlflow_rest import ClientOptions, RestClient
from kto_operator.settings import OperatorSettings
from operator_bench_common import (
    RESULTS,
    BenchNamespace,
    CpuMeter,
    JsonJobWatcher,
    Profiler,
    apiserver_requests,
    apply_crds,
    load_note,
    open_bed,
    percentile,
    poll,
    print_profile,
    request_delta,
    rss_mb,
    start_operator,
    submit_runs,
    tracebacks,
    trainingrun,
    write_json,
)


def raw_job(namespace: str, i: int, run_id: str | None = None, experiment_id: str = "1") -> dict[str, Any]:
    """The Job the operator would create for a run (same size and shape), minus the owner reference (no
    TrainingRun exists: the garbage collector would delete it)."""
    run = {**trainingrun(f"raw-{i:04d}", "raw"), "metadata": {"name": f"raw-{i:04d}", "namespace": namespace,
                                                             "uid": str(uuid.uuid4())}}
    manifest = jobs.build_job(run, OperatorSettings(tracking_uri="http://127.0.0.1:1"),
                              jobs.MlflowIds(run_id or uuid.uuid4().hex, experiment_id, "http://127.0.0.1:1"))
    del manifest["metadata"]["ownerReferences"]
    return manifest


def raw_rate(bed: Any, n: int, workers: int) -> dict[str, float]:
    ns = BenchNamespace(bed, "bench-raw", no_pods=True)
    try:
        watcher = JsonJobWatcher(bed.api(), ns.name)
        watcher.start()
        watcher.ready.wait(30)
        manifests = [raw_job(ns.name, i) for i in range(n)]
        start = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            # Bodies read (`.data`): an unread response would cost a new TLS connection per create.
            list(pool.map(lambda m: ns.batch.create_namespaced_job(ns.name, m, _preload_content=False).data,
                          manifests))
        requests_done = time.monotonic() - start
        poll(lambda: watcher.count() >= n, 300, f"{n} raw Jobs seen", 0.05)
        watcher.stop.set()
        elapsed = max(watcher.seen.values()) - start
        return {"jobs": n, "elapsed_s": round(elapsed, 2), "requests_s": round(requests_done, 2),
                "jobs_per_s": round(n / elapsed, 1)}
    finally:
        ns.delete()


async def _pipeline(uri: str, ns: BenchNamespace, experiment_id: str, n: int, workers: int) -> None:
    """`workers` runs at a time: MLflow runs/create on the event loop (as the operator does), then the Job by
    the Python client (it blocks) in one of `workers` threads."""
    mlflow = RestClient(uri, ClientOptions(), {})
    slots = asyncio.Semaphore(workers)
    loop = asyncio.get_running_loop()

    def create_job(manifest: dict[str, Any]) -> None:
        # The body read: an unread response would cost a new TLS connection per create.
        _ = ns.batch.create_namespaced_job(ns.name, manifest, _preload_content=False).data

    async def one(i: int, pool: ThreadPoolExecutor) -> None:
        async with slots:
            uid = str(uuid.uuid4())
            run = (await mlflow.post("runs/create", {
                "experiment_id": experiment_id, "run_name": f"raw-{i:04d}", "start_time": int(time.time() * 1000),
                "tags": [{"key": "kto.dev/uid", "value": uid}, {"key": "kto.dev/namespace", "value": ns.name}]},
                "create run"))["run"]
            await loop.run_in_executor(pool, create_job, raw_job(ns.name, i, run["info"]["run_id"], experiment_id))

    try:
        with ThreadPoolExecutor(workers) as pool:
            await asyncio.gather(*(one(i, pool) for i in range(n)))
    finally:
        await mlflow.close()


def pipeline_rate(bed: Any, n: int, workers: int) -> dict[str, Any]:
    """N runs done without the operator: per run one MLflow runs/create (the operator's REST client, tags
    like the operator's) then its Job, `workers` at a time; rate = N / (last Job seen - first request)."""
    from mlflow.tracking import MlflowClient

    ns = BenchNamespace(bed, "bench-pipe", no_pods=True)
    name = f"bench-pipeline-{ns.name}"
    experiment_id = MlflowClient(bed.env["MLFLOW_TRACKING_URI"]).create_experiment(name)
    try:
        watcher = JsonJobWatcher(bed.api(), ns.name)
        watcher.start()
        watcher.ready.wait(30)
        cpu = CpuMeter()
        cpu.start()
        start = time.monotonic()
        asyncio.run(_pipeline(bed.env["MLFLOW_TRACKING_URI"], ns, experiment_id, n, workers))
        poll(lambda: watcher.count() >= n, 300, f"{n} raw pipeline Jobs seen", 0.05)
        machine = cpu.stop()
        watcher.stop.set()
        elapsed = max(watcher.seen.values()) - start
        return {"runs": n, "workers": workers, "elapsed_s": round(elapsed, 2), "runs_per_s": round(n / elapsed, 1),
                "machine": machine}
    finally:
        ns.delete()
        _drop_experiment(bed, name)


def operator_burst(bed: Any, n: int, workers: int, profile: Path | None, log_dir: Path) -> dict[str, Any]:
    ns = BenchNamespace(bed, "bench-scale", no_pods=True)
    experiment = f"bench-scale-{ns.name}"
    op = None
    try:
        op = start_operator(bed, ns.name, log_dir)
        assert op.proc is not None
        rss_idle = rss_mb(op.proc.pid)
        watcher = JsonJobWatcher(bed.api(), ns.name)
        watcher.start()
        watcher.ready.wait(30)
        profiler = Profiler(op.proc.pid, profile) if profile else None
        requests_before = apiserver_requests(bed)
        cpu = CpuMeter(op.proc.pid)
        cpu.start()
        names = [f"burst-{i:04d}" for i in range(n)]
        start = time.monotonic()
        submitted = submit_runs(ns.custom, ns.name, names, experiment, workers)
        submit_spread = time.monotonic() - start
        poll(lambda: watcher.count() >= n or not op.alive(), 900, f"{n} Jobs from the operator", 0.1)
        machine = cpu.stop()
        requests = request_delta(requests_before, apiserver_requests(bed), n)
        if profiler:
            profiler.stop()
        assert op.alive(), f"operator died:\n{op.log()[-3000:]}"
        watcher.stop.set()
        last = max(watcher.seen.values())
        latencies = [watcher.seen[name] - t for name, t in submitted.items()]
        cpu_ms = 1000 * machine["cpu_s"].get("operator", 0.0) / n
        figures: dict[str, Any] = {
            "runs": n,
            "submit_spread_s": round(submit_spread, 2),
            "elapsed_s": round(last - start, 2),
            "runs_per_s": round(n / (last - start), 1),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(percentile(latencies, 0.95), 3),
            "p99_s": round(percentile(latencies, 0.99), 3),
            "max_s": round(max(latencies), 3),
            "rss_idle_mb": rss_idle[0],
            "rss_after_mb": rss_mb(op.proc.pid)[0],
            "hwm_mb": rss_mb(op.proc.pid)[1],
            "operator_tracebacks": tracebacks(op.log()),
            "operator_cpu_ms_per_run": round(cpu_ms, 1),
            "machine": machine,
            "apiserver_requests_per_run": requests,
        }
        if profiler:
            figures["profile"] = profiler.summary()
        return figures
    finally:
        if op is not None:
            op.stop()
        ns.delete()
        _drop_experiment(bed, experiment)


def _drop_experiment(bed: Any, name: str) -> None:
    """The bench's MLflow runs go with their experiment (soft delete; the bed's MLflow stays tidy)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(bed.env["MLFLOW_TRACKING_URI"])
    try:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            mlflow.delete_experiment(experiment.experiment_id)
    except MlflowException as exc:
        print(f"(could not delete experiment {name}: {exc})")


def _print_machine(title: str, machine: dict[str, Any], runs: int) -> None:
    print(f"  CPU during the {title} ({machine['wall_s']} s, {machine['busy_cores']} cores busy), ms per run: "
          + ", ".join(f"{k} {1000 * v / runs:.1f}" for k, v in sorted(machine["cpu_s"].items(), key=lambda kv: -kv[1])
                      if v))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8, help="client threads submitting (both phases)")
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during the burst")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    bed = open_bed()
    apply_crds(bed)
    out = RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"burst of {args.runs}, {args.workers} submitting threads; {load_note()}", flush=True)
    raw = raw_rate(bed, args.runs, args.workers)
    print(f"raw Jobs: {json.dumps(raw)}", flush=True)
    raw_1 = raw_rate(bed, args.runs, 1)
    print(f"raw Jobs, one thread: {json.dumps(raw_1)}", flush=True)
    pipeline = pipeline_rate(bed, args.runs, args.workers)
    print(f"raw pipeline (MLflow runs/create + Job create): {json.dumps(pipeline)}", flush=True)
    op = operator_burst(bed, args.runs, args.workers, out / "operator.collapsed" if args.profile else None, out)
    profile = op.pop("profile", None)
    print(f"operator: {json.dumps(op)}", flush=True)
    ratio = round(op["runs_per_s"] / pipeline["runs_per_s"], 2)
    print(f"\nTrainingRuns -> Jobs, burst of {args.runs} ({load_note()})")
    print(f"  raw Job creates       {raw['jobs_per_s']:7.1f} /s   ({args.workers} threads; one thread: "
          f"{raw_1['jobs_per_s']:.1f} /s)")
    print(f"  raw pipeline          {pipeline['runs_per_s']:7.1f} /s   (MLflow runs/create + Job create per run)")
    _print_machine("raw pipeline", pipeline["machine"], args.runs)
    print(f"  operator runs         {op['runs_per_s']:7.1f} /s   ratio to the raw pipeline {ratio:.2f} "
          "(target >= 0.8), "
          f"to raw Job creates {op['runs_per_s'] / raw['jobs_per_s']:.2f}")
    print(f"  submit->Job p50 {op['p50_s']:.2f} s  p95 {op['p95_s']:.2f} s  p99 {op['p99_s']:.2f} s"
          f"  max {op['max_s']:.2f} s; operator CPU {op['operator_cpu_ms_per_run']} ms per run (target <= 10)")
    print(f"  operator RSS idle {op['rss_idle_mb']} MB, after the burst {op['rss_after_mb']} MB "
          f"(peak {op['hwm_mb']} MB); tracebacks in its log: {op['operator_tracebacks']}")
    _print_machine("operator burst", op["machine"], args.runs)
    print("  API requests per TrainingRun (all clients): "
          + ", ".join(f"{k} {v}" for k, v in op["apiserver_requests_per_run"].items()))
    if profile:
        print_profile(profile)
    write_json(args.json, {"raw": raw, "raw_one_thread": raw_1, "pipeline": pipeline, "operator": op, "ratio": ratio,
                           "profile": profile,
                           "load": load_note()})
    print(f"(operator log and profile under {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
