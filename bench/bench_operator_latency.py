"""Submit -> Job latency of the TrainingRun operator: N TrainingRuns submitted at once on the bed.

    .venv/bin/python bench/bench_operator_latency.py [--runs 50] [--json out.json]

Needs the bed (`make bed`). Starts its own operator (namespace-scoped, like `make operator NAMESPACE=...`)
in a fresh namespace, submits the runs concurrently, and times, for each, from just before its create
request to the moment a watch sees its Job. The trainers are `python -c pass` (cheap pods: the figure is
the operator's MLflow round trips + Job creation, not pod start-up). Prints median, p95 and max, and the
operator's own histogram (kto_trainingrun_submit_to_job_seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "trainingruns"


def bed_env() -> dict[str, str]:
    env: dict[str, str] = {}
    path = REPO / ".bed" / "env"
    if not path.exists():
        sys.exit("no .bed/env: start the bed first (make bed)")
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def mlflow_probe_ms(uri: str, samples: int = 5) -> float:
    """Median latency of one MLflow request now: the operator makes three per submission, so this
    (and the machine's load) explains most of the figure."""
    from mlflow.tracking import MlflowClient

    client, times = MlflowClient(uri), []
    for _ in range(samples):
        start = time.perf_counter()
        client.search_experiments(max_results=1)
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def trainingrun(name: str, experiment: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name},
            "spec": {"image": "python:3.11", "command": ["python", "-c", "pass"], "experiment": experiment,
                     "parameters": {"epochs": 1}}}


class JobWatcher(threading.Thread):
    """Records when each Job of the namespace is first seen."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.batch, self.namespace = client.BatchV1Api(api), namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        resource_version = self.batch.list_namespaced_job(self.namespace).metadata.resource_version
        self.ready.set()
        while not self.stop.is_set():
            stream = watch.Watch().stream(self.batch.list_namespaced_job, self.namespace,
                                          resource_version=resource_version, timeout_seconds=5)
            for event in stream:
                obj = event["object"]
                resource_version = obj.metadata.resource_version
                with self.lock:
                    self.seen.setdefault(obj.metadata.name, time.monotonic())

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    env = bed_env()
    api = config.new_client_from_config(env["KUBECONFIG"])
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    experiment = f"bench-latency-{namespace}"
    from kto_bed.paths import k8s_bin

    crd = str(REPO / "crds" / "trainingrun.yaml")
    subprocess.run([str(k8s_bin("kubectl")), "apply", "--server-side", "--force-conflicts", "-f", crd],
                   env={**os.environ, **env}, check=True, capture_output=True)
    core.create_namespace({"metadata": {"name": namespace}})
    metrics_port, liveness = free_port(), free_port()
    log = (REPO / ".bed" / "logs" / f"operator-{namespace}.log").open("wb")
    operator = subprocess.Popen(
        [sys.executable, "-m", "kto_operator", "--namespace", namespace,
         "--liveness", f"http://127.0.0.1:{liveness}/healthz"],
        env={**os.environ, **env, "KTO_MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"],
             "KTO_METRICS_PORT": str(metrics_port)}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait(lambda: http_ok(f"http://127.0.0.1:{liveness}/healthz"), 60, "the operator")
        watcher = JobWatcher(api, namespace)
        watcher.start()
        watcher.ready.wait(30)
        submitted: dict[str, float] = {}
        context = {"load_average_1m": load_average(), "cpus": os.cpu_count(),
                   "mlflow_request_ms": mlflow_probe_ms(env["MLFLOW_TRACKING_URI"])}

        def submit(i: int) -> None:
            name = f"lat-{i:03d}"
            submitted[name] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, trainingrun(name, experiment))

        cpu = psutil.Process(operator.pid)
        cpu_before = sum(cpu.cpu_times()[:2])
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.runs) as pool:
            list(pool.map(submit, range(args.runs)))
        submit_spread = time.monotonic() - start
        wait(lambda: watcher.count() >= args.runs, args.timeout, f"{args.runs} Jobs")
        watcher.stop.set()
        # CPU the operator burnt from the first submission until the last Job: on this shared 2-CPU machine
        # its share of the CPU, not MLflow, sets the pace (load-independent cost per run).
        operator_cpu = sum(cpu.cpu_times()[:2]) - cpu_before
        latencies = [watcher.seen[name] - t for name, t in submitted.items()]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            histogram = [line for line in resp.read().decode().splitlines()
                         if line.startswith("kto_trainingrun_submit_to_job_seconds_")]
        figures = {
            "runs": args.runs,
            "submit_spread_s": round(submit_spread, 3),
            "median_s": round(statistics.median(latencies), 3),
            "p95_s": round(percentile(latencies, 0.95), 3),
            "max_s": round(max(latencies), 3),
            "min_s": round(min(latencies), 3),
            "all_jobs_after_s": round(max(watcher.seen.values()) - start, 3),
            "operator_cpu_s": round(operator_cpu, 2),
            "operator_cpu_ms_per_run": round(1000 * operator_cpu / args.runs, 1),
            **context,
        }
        print(json.dumps(figures, indent=2))
        print("\n".join(histogram))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        # Clean up with the operator still running (it owns the finalizers).
        for name in submitted:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        wait(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"], 120,
             "TrainingRuns deleted")
    finally:
        operator.terminate()
        try:
            operator.wait(20)
        except subprocess.TimeoutExpired:
            operator.kill()
        core.delete_namespace(namespace, propagation_policy="Background")
    return 0


if __name__ == "__main__":
    sys.exit(main())
