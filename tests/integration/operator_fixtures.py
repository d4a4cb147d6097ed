"""Fixtures and helpers for TrainingRun tests on the bed: the operator as a real subprocess (scoped to the
test's namespace), TrainingRun submission, polling, and MLflow look-ups. No mocks anywhere."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import STANDIN_IMAGE, free_port, wait_for
from tests.helpers import http_ok as _http_ok

GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "trainingruns"
STANDIN = STANDIN_IMAGE
TERMINAL = ("Succeeded", "Failed", "Cancelled")
CRD_FILE = "crds/trainingrun.yaml"




class Operator:
    """`python -m kto_operator --namespace NS` against the bed, restartable and killable."""

    def __init__(self, bed: Any, namespace: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.bed, self.namespace, self.log_dir = bed, namespace, log_dir
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0
        self.console_port = 0  # the web console (tests/integration/test_console.py)
        self.log_path = log_dir / "operator-0.log"

    def start(self, crash_at: str | None = None, **env: str) -> Operator:
        """Start the operator; with `crash_at`, one that SIGKILLs itself at that point of a creation (see
        tests/integration/crashing_operator.py)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.metrics_port, self.console_port, liveness = free_port(), free_port(), free_port()
        self.log_path = self.log_dir / f"operator-{self.starts}.log"
        full_env = {**os.environ, **self.bed.env, "KTO_MLFLOW_TRACKING_URI": self.bed.env["MLFLOW_TRACKING_URI"],
                    "KTO_METRICS_PORT": str(self.metrics_port), "KTO_CONSOLE_PORT": str(self.console_port),
                    "PYTHONUNBUFFERED": "1",
                    **self.extra_env, **env}
        entry = ["tests.integration.crashing_operator", crash_at] if crash_at else ["kto_operator"]
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *entry, "--namespace", self.namespace,
                 "--liveness", f"http://127.0.0.1:{liveness}/healthz"],
                cwd=self.bed.repo, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc = proc
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{liveness}/healthz") or proc.poll() is not None,
                 60, "operator liveness endpoint")
        assert proc.poll() is None, f"operator exited at start:\n{self.log()}"
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())


@pytest.fixture(scope="session")
def trainingrun_crd(bed: Any) -> None:
    bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / CRD_FILE))
    bed.kubectl("wait", "--for=condition=Established", "crd/trainingruns.kto.dev", "--timeout=60s")


@pytest.fixture
def runs(bed: Any, namespace: str, trainingrun_crd: None) -> Runs:
    return Runs(bed, namespace)


@pytest.fixture
def operator(bed: Any, namespace: str, trainingrun_crd: None, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(bed, namespace, tmp_path)
    yield op
    try:
        _drain(bed, namespace, op)
    finally:
        op.stop()
        # Shown by pytest for failing tests only.
        print(f"---- operator log ({namespace}) ----\n{op.log()[-20000:]}")


def _drain(bed: Any, namespace: str, op: Operator) -> None:
    """Delete the test's TrainingRuns while the operator runs (its finalizer), so that the namespace can
    go; whatever still holds a finalizer afterwards is released by hand."""
    custom = client.CustomObjectsApi(bed.api())
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    if not items:
        return
    if not op.alive():
        with contextlib.suppress(Exception):
            op.start()
    for item in items:
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
            return
        time.sleep(0.5)
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        with contextlib.suppress(ApiException):
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"],
                                                  {"metadata": {"finalizers": None}})


class Runs:
    """TrainingRuns of one namespace: submit, read, wait."""

    def __init__(self, bed: Any, namespace: str) -> None:
        self.bed, self.namespace = bed, namespace
        self.custom = client.CustomObjectsApi(bed.api())
        self.batch = client.BatchV1Api(bed.api())
        self.core = client.CoreV1Api(bed.api())

    def submit(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name},
                "spec": {"image": STANDIN, "experiment": f"it-{self.namespace}", **spec}}
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def wait_phase(self, name: str, phases: str | tuple[str, ...], timeout: float = 90,
                   seen: list[str] | None = None) -> dict[str, Any]:
        """Poll until the phase is one of `phases`; `seen` collects the (phase, reason) sequence."""
        wanted = (phases,) if isinstance(phases, str) else phases

        def check() -> dict[str, Any] | None:
            st = self.status(name)
            if seen is not None and st.get("phase") and (not seen or seen[-1] != st["phase"]):
                seen.append(st["phase"])
            return st if st.get("phase") in wanted else None

        return wait_for(check, timeout, f"TrainingRun {name} in {wanted} (now {self.status(name)})", interval=0.1)

    def jobs(self) -> list[client.V1Job]:
        return list(self.batch.list_namespaced_job(self.namespace).items)

    def pods(self, name: str | None = None) -> list[client.V1Pod]:
        selector = "app.kubernetes.io/managed-by=kto-operator"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        if name is None:
            return list(pods)
        return [p for p in pods if (p.metadata.annotations or {}).get("kto.dev/trainingrun-name") == name]

    def events(self, name: str) -> list[client.CoreV1Event]:
        events = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [e for e in events.items if e.involved_object.kind == "TrainingRun"]

    def s3_secret(self, access: str | None = None, secret: str | None = None) -> tuple[str, str]:
        """A Secret `s3-creds` with unique values (to prove they never leak); returns them."""
        access = access or f"AKIA{uuid.uuid4().hex[:12].upper()}"
        secret = secret or f"leak-canary-{uuid.uuid4().hex}"
        self.core.create_namespaced_secret(self.namespace, {
            "metadata": {"name": "s3-creds"},
            "stringData": {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}})
        return access, secret


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs_for_uid(uri: str, experiment: str, uid: str) -> list[Any]:
    """Every MLflow run tagged with this TrainingRun UID (active or deleted)."""
    from mlflow.entities import ViewType

    mlflow = mlflow_client(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`kto.dev/uid` = '{uid}'",
                                   run_view_type=ViewType.ALL))


class MlflowServer:
    """A private MLflow server (own port and store) for outage tests; the bed's stays up for everyone."""

    def __init__(self, work: Path) -> None:
        self.work = work
        from kto_bed.network import BED_IP

        # On the bed's address, like the bed's own MLflow: the trainer pods log to it too.
        self.host, self.port = BED_IP, free_port()
        self.uri = f"http://{self.host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        log = (self.work / "mlflow.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", self.host, "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.work / 'mlflow.db'}",
             "--artifacts-destination", f"file://{self.work / 'artifacts'}", "--workers", "1"],
            cwd=self.work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # No background job runner (a dozen huey processes the tests never use).
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"})
        wait_for(lambda: _http_ok(f"{self.uri}/health"), 120, "private MLflow server")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        # Whatever is left of its process group (uvicorn workers) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        wait_for(lambda: not _http_ok(f"{self.uri}/health"), 20, "private MLflow server down")
