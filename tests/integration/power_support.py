"""Helpers for the PowerSchedule tests on the bed: the operator as a subprocess, workloads that the bed's node
agent really runs, PowerSchedule access and polling. No mocks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import free_port, sleep_command, wait_for
from tests.helpers import http_ok as _http_ok

GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "powerschedules"
SLEEPER = sleep_command(3600)




class PowerOperator:
    """The operator scoped to one namespace: `full` is `python -m kto_operator` (TrainingRun + power
    handlers, the product); otherwise only the power handlers (`kopf run -m kto_operator.power.handlers`)."""

    def __init__(self, bed: Any, namespace: str, log_dir: Path, full: bool = False) -> None:
        self.bed, self.namespace, self.log_dir, self.full = bed, namespace, log_dir, full
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> PowerOperator:
        assert not self.alive()
        self.starts += 1
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {**os.environ, **self.bed.env, "PYTHONUNBUFFERED": "1", "KTO_POWER_POLL": "0.25",
               "KTO_MLFLOW_TRACKING_URI": self.bed.env["MLFLOW_TRACKING_URI"], "KTO_METRICS_PORT": str(free_port()),
               "KTO_CONSOLE_PORT": str(free_port())}
        if self.full:
            cmd = [sys.executable, "-m", "kto_operator", "--namespace", self.namespace, "--liveness", liveness]
        else:
            cmd = [sys.executable, "-m", "kopf", "run", "-m", "kto_operator.power.handlers", "--standalone",
                   "--namespace", self.namespace, "--liveness", liveness]
        with (self.log_dir / f"power-operator-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.bed.repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(lambda: _http_ok(liveness) or not self.alive(), 60, "operator liveness")
        assert self.alive(), f"operator exited at start:\n{self.log()}"
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("power-operator-*.log")))


class Platform:
    """Workloads and the PowerSchedule of one test namespace."""

    def __init__(self, bed: Any, namespace: str) -> None:
        self.bed, self.ns = bed, namespace
        api = bed.api()
        self.apps, self.batch = client.AppsV1Api(api), client.BatchV1Api(api)
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    # Workloads ----------------------------------------------------------------------------------------
    @staticmethod
    def _template(app: str) -> dict[str, Any]:
        return {"metadata": {"labels": {"app": app}}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "python:3.11", "command": SLEEPER}]}}

    def deployment(self, name: str, replicas: int, labels: dict[str, str] | None = None) -> None:
        self.apps.create_namespaced_deployment(self.ns, {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": self._template(name)}})

    def statefulset(self, name: str, replicas: int, labels: dict[str, str] | None = None) -> None:
        self.apps.create_namespaced_stateful_set(self.ns, {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}}, "template": self._template(name)}})

    def cronjob(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.batch.create_namespaced_cron_job(self.ns, {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"schedule": "0 0 1 1 *", "suspend": False, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "python:3.11",
                                                          "command": ["python", "-c", "pass"]}]}}}}}})

    def get(self, kind: str, name: str) -> Any:
        return {"Deployment": self.apps.read_namespaced_deployment,
                "StatefulSet": self.apps.read_namespaced_stateful_set,
                "CronJob": self.batch.read_namespaced_cron_job}[kind](name, self.ns)

    def replicas(self, kind: str, name: str) -> int:
        return int(self.get(kind, name).spec.replicas)

    def ready(self, kind: str, name: str) -> int:
        return int(self.get(kind, name).status.ready_replicas or 0)

    def scale(self, kind: str, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        if kind == "Deployment":
            self.apps.patch_namespaced_deployment(name, self.ns, patch)
        else:
            self.apps.patch_namespaced_stateful_set(name, self.ns, patch)

    def running_pods(self, app: str) -> int:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=f"app={app}").items
        return sum(1 for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp)

    def all_pods(self, app: str) -> int:
        return len(self.core.list_namespaced_pod(self.ns, label_selector=f"app={app}").items)

    def wait_ready(self, kind: str, name: str, n: int, timeout: float = 90) -> None:
        wait_for(lambda: self.ready(kind, name) == n and self.running_pods(name) == n, timeout,
                 f"{kind}/{name} with {n} ready pods")

    # PowerSchedule --------------------------------------------------------------------------------------
    def create_power(self, spec: dict[str, Any], name: str = "power") -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PowerSchedule", "metadata": {"name": name},
            "spec": spec})

    def power(self, name: str = "power") -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name))

    def status(self, name: str = "power") -> dict[str, Any]:
        return dict(self.power(name).get("status") or {})

    def patch_power(self, body: dict[str, Any], name: str = "power") -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, body)

    def switch(self, state: str, name: str = "power") -> None:
        self.patch_power({"spec": {"state": state}}, name)

    def wait_state(self, state: str, timeout: float = 60, name: str = "power",
                   reason: str | None = None) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status(name)
            ok = st.get("state") == state and (reason is None or st.get("reason") == reason)
            return st if ok else None

        return wait_for(check, timeout, f"PowerSchedule {name} {state} {reason or ''} (now {self.status(name)})",
                        interval=0.1)

    def events(self, name: str = "power") -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name}").items
        return [(e.type, e.reason, e.message) for e in items if e.involved_object.kind == "PowerSchedule"]

    def wait_event(self, reason: str, contains: str = "", name: str = "power", timeout: float = 20) -> str:
        """Events are posted asynchronously by kopf: poll for them."""
        def check() -> str | None:
            return next((m for _, r, m in self.events(name) if r == reason and contains in (m or "")), None)

        return wait_for(check, timeout, f"Event {reason} {contains!r} on {name}")

    def delete_powers(self, timeout: float = 30) -> None:
        """Delete every PowerSchedule (while the operator runs: its finalizer releases the workloads)."""
        for item in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]:
            with contextlib.suppress(ApiException):
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                            item["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]:
                return
            time.sleep(0.2)

    def strip_finalizers(self) -> None:
        for item in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]:
            with contextlib.suppress(ApiException):
                self.patch_power({"metadata": {"finalizers": None}}, item["metadata"]["name"])


def apply_crds(bed: Any) -> None:
    for crd in ("crds/powerschedule.yaml", "crds/trainingrun.yaml"):
        bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / crd))
    for name in ("powerschedules.kto.dev", "trainingruns.kto.dev"):
        bed.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
