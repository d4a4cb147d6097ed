"""Submit -> Job latency of the TrainingRun operator, one run at a time on an idle bed, and what each
successful run costs: API requests (the API server's count) and MLflow requests (before the Job, in all).

    .venv/bin/python bench/bench_operator_latency.py [--runs 40] [--json out.json]

Needs the bed (`make bed`). In a fresh namespace the operator (`python -m kto_operator --namespace NS`, the
integration tests' Operator) runs as the shipped ServiceAccount with its own FlowSchema, and talks to
MLflow through a counting proxy (bench/operator_probes.py). One warm-up run (the experiment is created,
connections opened), then `--runs` runs one after the other: each is submitted only once the previous
one has Succeeded and its MLflow run is closed, so the bed is idle at every submission. The trainer is the
test-only non-root image sleeping 0 s. Per run: latency = the Job seen by a watch - just before the
TrainingRun's create request; MLflow requests that arrived in that interval; MLflow requests until the
next submission. API requests per run = the operator's flow count over the measured runs / runs.
Targets (bench/targets.toml): p95 <= 1 s, <= 8 API requests per run, 1 MLflow request before the Job.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from kto_operator import naming
from mlflow.tracking import MlflowClient
from operator_bench_common import (
    GROUP,
    PLURAL,
    RESULTS,
    VERSION,
    BenchNamespace,
    JsonJobWatcher,
    Operator,
    apiserver_requests,
    apply_crds,
    load_note,
    open_bed,
    percentile,
    poll,
    request_delta,
    tracebacks,
    trainingrun,
    write_json,
)
from operator_probes import MlflowCounter, OperatorIdentity

IDLE_WINDOW_S = 20.0


def one_run(ns: BenchNamespace, watcher: JsonJobWatcher, mlflow: MlflowClient, name: str,
            experiment: str) -> tuple[float, float]:
    """Submit one run, wait for its Job, its Succeeded phase and its closed MLflow run: (submitted, Job seen)."""
    submitted = time.monotonic()
    ns.custom.create_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL, trainingrun(name, experiment))
    job = naming.job_name(name)
    poll(lambda: job_seen_at(watcher, job), 60, f"the Job of {name}", 0.01)
    job_seen = job_seen_at(watcher, job)
    assert job_seen is not None

    def succeeded() -> dict[str, Any] | None:
        status = ns.custom.get_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL, name).get("status") or {}
        if status.get("phase") in ("Failed", "Cancelled"):
            raise RuntimeError(f"{name} ended {status.get('phase')}: {status.get('message') or status}")
        return status if status.get("phase") == "Succeeded" else None

    status = poll(succeeded, 120, f"{name} Succeeded", 0.2)
    run_id = status["mlflow"]["runId"]
    poll(lambda: mlflow.get_run(run_id).info.status == "FINISHED", 60, f"MLflow run of {name} FINISHED", 0.2)
    return submitted, job_seen


def job_seen_at(watcher: JsonJobWatcher, job: str) -> float | None:
    with watcher.lock:
        return watcher.seen.get(job)


def measure(bed: Any, runs: int, out: Path) -> dict[str, Any]:
    ns = BenchNamespace(bed, "bench-lat", no_pods=False)
    experiment = f"bench-latency-{ns.name}"
    identity = OperatorIdentity(bed, ns.name, out)
    counter = MlflowCounter(bed.env["MLFLOW_TRACKING_URI"]).start()
    mlflow = MlflowClient(bed.env["MLFLOW_TRACKING_URI"])
    op = Operator(bed, ns.name, out, env={**identity.env(), "KTO_MLFLOW_TRACKING_URI": counter.uri})
    try:
        identity.create()
        op.start()
        assert op.proc is not None
        watcher = JsonJobWatcher(bed.api(), ns.name)
        watcher.start()
        watcher.ready.wait(30)
        warm_submitted, warm_job = one_run(ns, watcher, mlflow, "lat-warm", experiment)
        # The operator's requests while no run is in flight (its watches, the platform gate's lists), so
        # that the per-run figure can be read against them; a measurement window, not an assertion.
        idle_before = identity.requests()
        time.sleep(IDLE_WINDOW_S)
        idle_requests = identity.requests() - idle_before
        load_1m = psutil.getloadavg()[0]
        cpu = psutil.Process(op.proc.pid)
        cpu_before = sum(cpu.cpu_times()[:2])
        requests_before = identity.requests()
        everyone_before = apiserver_requests(bed)
        times: list[tuple[float, float]] = []
        for i in range(runs):
            times.append(one_run(ns, watcher, mlflow, f"lat-{i:03d}", experiment))
        end = time.monotonic()
        api_requests = identity.requests() - requests_before
        # All clients (the bench's polling, the controllers, the kubelet too): which kinds of request.
        everyone = request_delta(everyone_before, apiserver_requests(bed), runs)
        operator_cpu = sum(cpu.cpu_times()[:2]) - cpu_before
        watcher.stop.set()
        latencies = [job - sub for sub, job in times]
        before_job = [len(counter.between(sub, job)) for sub, job in times]
        starts = [sub for sub, _ in times] + [end]
        per_run = [len(counter.between(starts[i], starts[i + 1])) for i in range(runs)]
        paths = sorted({f"{m} {p}" for _, m, p in counter.between(times[0][0], times[0][1])})
        return {
            "runs": runs,
            "latency": {"p50_s": round(statistics.median(latencies), 3), "p95_s": round(percentile(latencies, 0.95), 3),
                        "min_s": round(min(latencies), 3), "max_s": round(max(latencies), 3),
                        "all_s": [round(x, 3) for x in latencies]},
            "warmup_latency_s": round(warm_job - warm_submitted, 3),
            "run_s_median": round(statistics.median(starts[i + 1] - starts[i] for i in range(runs)), 2),
            "idle_requests_per_minute": round(60 * idle_requests / IDLE_WINDOW_S, 1),
            "api_requests_total": api_requests,
            "api_requests_per_run": round(api_requests / runs, 2),
            "all_clients_requests_per_run": everyone,
            "mlflow_requests": {"before_job": before_job, "per_run": per_run, "before_job_paths": paths},
            "mlflow_proxy_overhead_ms": round(1000 * statistics.median(counter.overhead_s), 2),
            "operator_cpu_ms_per_run": round(1000 * operator_cpu / runs, 1),
            "load_average_1m_at_start": round(load_1m, 2),
            "operator_tracebacks": tracebacks(op.log()),
        }
    finally:
        op.stop()
        counter.stop()
        ns.delete()
        identity.delete()
        _drop_experiment(mlflow, experiment)


def _drop_experiment(mlflow: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            mlflow.delete_experiment(experiment.experiment_id)
    except MlflowException as exc:
        print(f"(could not delete experiment {name}: {exc})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    bed = open_bed()
    apply_crds(bed)
    out = RESULTS / f"latency-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"{args.runs} runs one at a time; {load_note()}", flush=True)
    figures = measure(bed, args.runs, out)
    lat, ml = figures["latency"], figures["mlflow_requests"]
    print(json.dumps({k: v for k, v in figures.items() if k not in ("latency", "mlflow_requests")}, indent=2))
    print(f"\nsubmit -> Job, one at a time ({args.runs} runs): p50 {lat['p50_s']:.3f} s, p95 {lat['p95_s']:.3f} s "
          f"(target <= 1 s), min {lat['min_s']:.3f} s, max {lat['max_s']:.3f} s; warm-up run "
          f"{figures['warmup_latency_s']:.3f} s")
    print(f"API requests per successful run (the operator's flow): {figures['api_requests_per_run']} "
          f"(target <= 8); {figures['run_s_median']} s per run; idle, the operator makes "
          f"{figures['idle_requests_per_minute']} requests a minute")
    print(f"MLflow requests before the Job: median {statistics.median(ml['before_job'])} (target 1), "
          f"max {max(ml['before_job'])}: {', '.join(ml['before_job_paths'])}; per run in all: "
          f"median {statistics.median(ml['per_run'])}; proxy overhead {figures['mlflow_proxy_overhead_ms']} ms "
          f"per request")
    print(f"operator CPU {figures['operator_cpu_ms_per_run']} ms per run; tracebacks in its log: "
          f"{figures['operator_tracebacks']}; {load_note()} (operator log under {out})")
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
