"""Sleep and wake of N Deployments by a PowerSchedule on the bed (targets in bench/targets.toml).

    .venv/bin/python bench/bench_power.py [--deployments 50] [--replicas 1] [--rounds 3] [--json out.json]

Needs the bed (`make bed`). In a fresh namespace: N Deployments (python:3.11 sleepers: real containers on
the bed's node), the power operator (`kopf run -m kto_operator.power.handlers --namespace NS`), a
PowerSchedule. Each round switches spec.state off then on and times, from just before the patch:
  - sleep: until status.state is Off (every Deployment at 0 with its saved-replicas annotation);
  - pods gone: until no pod is left (the ReplicaSet controller, the kubelet, grace periods; informational);
  - wake restored: until every Deployment has its replicas back (what the operator does);
  - wake Ready: until status.state is On (every Deployment Ready: the node has started N containers,
    each Ready once its process runs; the platform usable).
Every round also checks that each Deployment came back to exactly its replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.helpers` lives at the repo root
    sys.path.insert(0, str(REPO))
from tests.helpers import sleep_command  # noqa: E402

GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "powerschedules"
SLEEPER = sleep_command(3600)


def bed_env() -> dict[str, str]:
    path = REPO / ".bed" / "env"
    if not path.exists():
        sys.exit("no .bed/env: start the bed first (make bed)")
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(fn: Callable[[], bool], timeout: float, what: str, interval: float = 0.05,
         start: float | None = None) -> float:
    """Seconds from `start` (default: now) until fn() is true (fails after timeout)."""
    start = time.monotonic() if start is None else start
    while not fn():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(interval)
    return time.monotonic() - start


class Bench:
    def __init__(self, env: dict[str, str], n: int, replicas: int) -> None:
        self.env, self.n, self.replicas = env, n, replicas
        self.ns = f"bench-power-{uuid.uuid4().hex[:6]}"
        api = config.new_client_from_config(env["KUBECONFIG"])
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/{self.ns}-operator.log")

    def kubectl(self, *args: str) -> None:
        kubectl = os.environ.get("KUBECTL", "kubectl")
        subprocess.run([kubectl, *args], env={**os.environ, **self.env}, check=True, capture_output=True)

    def setup(self) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds/powerschedule.yaml"))
        self.kubectl("wait", "--for=condition=Established", "crd/powerschedules.kto.dev", "--timeout=60s")
        self.core.create_namespace({"metadata": {"name": self.ns}})
        for i in range(self.n):
            name = f"app-{i:02d}"
            self.apps.create_namespaced_deployment(self.ns, {"metadata": {"name": name}, "spec": {
                "replicas": self.replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "python:3.11", "command": SLEEPER}]}}}})
        poll(self.all_ready, 300, f"{self.n} Deployments Ready", interval=0.5)
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "-m", "kto_operator.power.handlers", "--standalone",
                 "--namespace", self.ns, "--liveness", liveness],
                cwd=REPO, env={**os.environ, **self.env, "KTO_POWER_POLL": "0.25"}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        poll(lambda: _http_ok(liveness), 60, "operator liveness", interval=0.2)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PowerSchedule", "metadata": {"name": "power"},
            "spec": {"state": "on"}})
        poll(lambda: self.state() == "On", 60, "PowerSchedule On")

    def state(self) -> str | None:
        power = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, "power")
        return (power.get("status") or {}).get("state")

    def deployments(self) -> list[Any]:
        return list(self.apps.list_namespaced_deployment(self.ns).items)

    def all_ready(self) -> bool:
        items = self.deployments()
        return len(items) == self.n and all((d.status.ready_replicas or 0) == self.replicas for d in items)

    def restored(self) -> bool:
        return all(d.spec.replicas == self.replicas for d in self.deployments())

    def no_pods(self) -> bool:
        return not self.core.list_namespaced_pod(self.ns).items

    def switch(self, state: str) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, "power",
                                                   {"spec": {"state": state}})

    def round(self) -> dict[str, float]:
        # Every figure counts from just before the patch request.
        t0 = time.monotonic()
        self.switch("off")
        sleep = poll(lambda: self.state() == "Off", 120, "Off", start=t0)
        assert all(d.spec.replicas == 0 for d in self.deployments())
        try:  # informational: the kubelet and grace periods, not the operator
            pods_gone = poll(self.no_pods, 120, "pods gone", interval=0.1, start=t0)
        except TimeoutError as err:
            print(f"  ({err}; {len(self.core.list_namespaced_pod(self.ns).items)} pods left)", flush=True)
            pods_gone = float("nan")
        t0 = time.monotonic()
        self.switch("on")
        restored = poll(self.restored, 120, "replicas restored", start=t0)
        ready = poll(lambda: self.state() == "On", 300, "On (Ready)", start=t0)
        assert self.all_ready(), "On but not every Deployment Ready"
        return {"sleep_s": sleep, "pods_gone_s": pods_gone, "wake_restored_s": restored, "wake_ready_s": ready}

    def teardown(self) -> None:
        """Stop the operator first: deleting the PowerSchedule under it would wake all 50 for nothing."""
        try:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(30)
        finally:
            with contextlib.suppress(client.ApiException):
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, "power",
                                                           {"metadata": {"finalizers": None}})
            self.core.delete_namespace(self.ns, propagation_policy="Background")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bench = Bench(bed_env(), args.deployments, args.replicas)
    rounds: list[dict[str, float]] = []
    try:
        bench.setup()
        for i in range(args.rounds):
            r = bench.round()
            rounds.append(r)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    finally:
        bench.teardown()
    summary = {k: {"median": statistics.median(r[k] for r in rounds), "max": max(r[k] for r in rounds)}
               for k in rounds[0]}
    with contextlib.suppress(OSError):
        print(f"load average during the run (1, 5, 15 min): {os.getloadavg()}")
    print(f"\n{args.deployments} Deployments x {args.replicas} replica(s), {args.rounds} rounds "
          f"(bed: real apiserver + controllers, pods on the real node; CPUs: {os.cpu_count()})")
    for k, v in summary.items():
        print(f"  {k:16s} median {v['median']:6.2f} s   max {v['max']:6.2f} s")
    # The operator's own share (its log): the patch sweep alone, without watch latency and status writes.
    text = bench.log.read_text(errors="replace") if bench.log.exists() else ""
    sweeps = [float(m) for m in re.findall(r"workloads asleep, sweep ([0-9.]+) s", text)]
    restores = [float(m) for m in re.findall(r"Deployments restored in ([0-9.]+) s", text)]
    if sweeps and restores:
        print(f"  operator side: sleep sweep median {statistics.median(sweeps):.2f} s (max {max(sweeps):.2f}), "
              f"restore median {statistics.median(restores):.2f} s (max {max(restores):.2f})")
    if args.json:
        args.json.write_text(json.dumps({"deployments": args.deployments, "replicas": args.replicas,
                                         "rounds": rounds, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
