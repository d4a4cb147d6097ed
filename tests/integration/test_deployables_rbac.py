"""The operator runs with nothing but its own ServiceAccount's token, bound only by the shipped Role
(manifests/operator), in a namespace enforcing Pod Security `restricted`: a PowerSchedule goes off -> on
(Deployment, StatefulSet and CronJob slept and restored exactly) and a TrainingRun goes to Succeeded
(its trainer pod admitted under `restricted`), with no request refused along the way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.helpers import STANDIN_IMAGE, sleep_command, wait_for
from tests.helpers import free_port as _free_port
from tests.helpers import http_ok as _http_ok
from tests.integration.deployables_support import of_kind, render, workspace

pytestmark = pytest.mark.integration

GROUP, VERSION = "kto.dev", "v1alpha1"
SLEEPER = sleep_command(1e6)
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# A refused request: the API's 403 Status always says "forbidden" (a bare 403 would match log timestamps).
REFUSED = re.compile(r"forbidden|cannot (list|watch|get|patch|create|delete|update)", re.I)




def token_kubeconfig(bed: Any, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig whose only credential is a TokenRequest token of the ServiceAccount."""
    token = client.CoreV1Api(bed.api()).create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(bed.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:  # make it self-contained
        import base64

        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "bed", "user": service_account, "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


class TokenOperator:
    """`python -m kto_operator --namespace NS` with only the token kubeconfig (no admin credentials)."""

    def __init__(self, bed: Any, namespace: str, kubeconfig: Path, log: Path) -> None:
        self.bed, self.namespace, self.kubeconfig, self.log_path = bed, namespace, kubeconfig, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        liveness, metrics = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "AWS_"))}
        env.update(KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1",
                   KTO_MLFLOW_TRACKING_URI=self.bed.env["MLFLOW_TRACKING_URI"], KTO_METRICS_PORT=str(metrics),
                   KTO_CONSOLE_PORT="0")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kto_operator", "--namespace", self.namespace,
                 "--liveness", f"http://127.0.0.1:{liveness}/healthz"],
                cwd=self.bed.repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{liveness}/healthz") or self.proc.poll() is not None,
                 60, "operator liveness endpoint")
        assert self.proc.poll() is None, f"operator exited at start:\n{self.log()}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def rbac_ns(bed: Any, openshift_namespace: str, tmp_path: Path) -> str:
    """An OpenShift-like namespace (arbitrary UIDs, `restricted` enforced) with the shipped ServiceAccount,
    Role and RoleBinding."""
    namespace = openshift_namespace
    bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / "crds"))
    for crd in ("trainingruns.kto.dev", "powerschedules.kto.dev"):
        bed.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    docs = of_kind(render(bed, workspace(bed.repo, tmp_path / "ws"), "operator"),
                   "ServiceAccount", "Role", "RoleBinding")
    assert len(docs) == 3
    bed.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    return namespace


@pytest.fixture
def sa_api(bed: Any, rbac_ns: str, tmp_path: Path) -> Iterator[tuple[client.ApiClient, Path]]:
    path = token_kubeconfig(bed, rbac_ns, "kto-operator", tmp_path / "sa.kubeconfig")
    api = config.new_client_from_config(str(path))
    yield api, path
    api.close()


def _can(api: client.ApiClient, verb: str, resource: str, namespace: str | None, group: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review({"spec": {"resourceAttributes": {
        "verb": verb, "resource": resource, "group": group, **({"namespace": namespace} if namespace else {})}}})
    return bool(review.status.allowed)


def test_service_account_has_namespace_rights_only(rbac_ns: str, sa_api: tuple[client.ApiClient, Path]) -> None:
    api, _ = sa_api
    assert _can(api, "create", "jobs", rbac_ns, "batch")
    assert _can(api, "patch", "trainingruns", rbac_ns, GROUP)
    assert _can(api, "patch", "statefulsets", rbac_ns, "apps")
    # Nothing beyond: no Secrets, no creating workloads, no other namespace, nothing cluster-wide.
    assert not _can(api, "get", "secrets", rbac_ns)
    assert not _can(api, "list", "secrets", rbac_ns)
    assert not _can(api, "create", "deployments", rbac_ns, "apps")
    assert not _can(api, "create", "pods", rbac_ns)
    assert not _can(api, "delete", "trainingruns", rbac_ns, GROUP)
    assert not _can(api, "list", "jobs", "default", "batch")
    assert not _can(api, "list", "trainingruns", None, GROUP)
    assert not _can(api, "list", "namespaces", None)
    assert not _can(api, "list", "customresourcedefinitions", None, "apiextensions.k8s.io")


def _workloads(bed: Any, ns: str) -> None:
    apps, batch = client.AppsV1Api(bed.api()), client.BatchV1Api(bed.api())

    def template(app: str) -> dict[str, Any]:
        return {"metadata": {"labels": {"app": app}},
                "spec": {"securityContext": RESTRICTED_POD, "terminationGracePeriodSeconds": 2, "containers": [
                    {"name": "main", "image": "python:3.11-slim", "command": SLEEPER,
                     "securityContext": RESTRICTED_CONTAINER}]}}

    apps.create_namespaced_deployment(ns, {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}})
    apps.create_namespaced_stateful_set(ns, {"metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}})
    job_pod = template("nightly")["spec"] | {"restartPolicy": "Never"}
    batch.create_namespaced_cron_job(ns, {"metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": job_pod}}}}})


def _replicas(bed: Any, ns: str) -> tuple[int, int, bool]:
    apps, batch = client.AppsV1Api(bed.api()), client.BatchV1Api(bed.api())
    return (apps.read_namespaced_deployment(name="web", namespace=ns).spec.replicas,
            apps.read_namespaced_stateful_set(name="db", namespace=ns).spec.replicas,
            bool(batch.read_namespaced_cron_job(name="nightly", namespace=ns).spec.suspend))


def _ready(bed: Any, ns: str) -> bool:
    apps = client.AppsV1Api(bed.api())
    web = apps.read_namespaced_deployment(name="web", namespace=ns).status
    db = apps.read_namespaced_stateful_set(name="db", namespace=ns).status
    return (web.ready_replicas or 0) == 2 and (db.ready_replicas or 0) == 1


def _cr(bed: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(bed.api())


def _power_state(bed: Any, ns: str) -> str | None:
    obj = _cr(bed).get_namespaced_custom_object(GROUP, VERSION, ns, "powerschedules", "power")
    return (obj.get("status") or {}).get("state")


def _run_status(bed: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(_cr(bed).get_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns", name).get("status") or {})


def _gone(bed: Any, ns: str, plural: str, name: str) -> bool:
    try:
        _cr(bed).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
        return False
    except ApiException as err:
        return err.status == 404


def test_operator_runs_on_the_shipped_role_alone(bed: Any, rbac_ns: str, sa_api: tuple[client.ApiClient, Path],
                                                 tmp_path: Path) -> None:
    import mlflow

    ns, (_, kubeconfig) = rbac_ns, sa_api
    _workloads(bed, ns)
    wait_for(lambda: _ready(bed, ns), 90, "web (2) and db (1) Ready")
    op = TokenOperator(bed, ns, kubeconfig, tmp_path / "operator.log")
    op.start()
    try:
        # PowerSchedule off -> on: everything slept, then restored exactly.
        _cr(bed).create_namespaced_custom_object(GROUP, VERSION, ns, "powerschedules", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PowerSchedule", "metadata": {"name": "power"},
            "spec": {"state": "off"}})
        wait_for(lambda: _power_state(bed, ns) == "Off", 60, f"PowerSchedule Off\n{op.log()[-3000:]}")
        assert _replicas(bed, ns) == (0, 0, True)
        _cr(bed).patch_namespaced_custom_object(GROUP, VERSION, ns, "powerschedules", "power",
                                                {"spec": {"state": "on"}})
        wait_for(lambda: _power_state(bed, ns) == "On", 90, f"PowerSchedule On\n{op.log()[-3000:]}")
        assert _replicas(bed, ns) == (2, 1, False)
        wait_for(lambda: _ready(bed, ns), 60, "workloads Ready again")

        # A TrainingRun to Succeeded: MLflow run, Job, restricted trainer pod, status and metrics.
        _cr(bed).create_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": "rbac-run"},
            "spec": {"image": STANDIN_IMAGE, "experiment": f"rbac-{ns}",
                     "parameters": {"epochs": 2, "sleep": 0.2},
                     "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}}}})
        status = wait_for(lambda: (s := _run_status(bed, ns, "rbac-run")).get("phase") in
                          ("Succeeded", "Failed", "Cancelled") and s, 120,
                          f"TrainingRun finished\n{op.log()[-3000:]}")
        assert status["phase"] == "Succeeded", status
        run_id = status["mlflow"]["runId"]
        mlflow_run = mlflow.MlflowClient(bed.env["MLFLOW_TRACKING_URI"]).get_run(run_id)
        assert mlflow_run.info.status == "FINISHED" and "accuracy" in mlflow_run.data.metrics

        # Deletion (finalizers) also works on the Role alone.
        _cr(bed).delete_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns", "rbac-run")
        _cr(bed).delete_namespaced_custom_object(GROUP, VERSION, ns, "powerschedules", "power")
        wait_for(lambda: _gone(bed, ns, "trainingruns", "rbac-run") and _gone(bed, ns, "powerschedules", "power"),
                 60, "finalizers released")
        events = client.CoreV1Api(bed.api()).list_namespaced_event(ns).items
        assert any(e.involved_object.kind == "PowerSchedule" for e in events), "no Event posted"
    finally:
        op.stop()
        print(f"---- operator log ({ns}) ----\n{op.log()[-20000:]}")
    refused = [line for line in op.log().splitlines() if REFUSED.search(line)]
    assert not refused, "\n".join(refused[:20])


def test_operator_deployment_from_the_manifests_runs_a_training(bed: Any, rbac_ns: str, tmp_path: Path) -> None:
    """manifests/operator as shipped (Deployment, ConfigMap, probe, POD_NAMESPACE, its ServiceAccount's
    token in the pod) on the bed, the kto-operator image under the namespace's arbitrary UID: Ready without
    restarts, metrics served, a TrainingRun Succeeded. Only the MLflow URL changes (the bed's own MLflow)."""
    import mlflow

    ns = rbac_ns
    docs = render(bed, workspace(bed.repo, tmp_path / "ws2"), "operator")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"].update(KTO_MLFLOW_TRACKING_URI=bed.env["MLFLOW_TRACKING_URI"])
    applied = bed.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert applied.returncode == 0 and "PodSecurity" not in applied.stderr, applied.stderr
    core, apps = client.CoreV1Api(bed.api()), client.AppsV1Api(bed.api())

    def operator_log() -> str:
        return bed.kubectl("logs", "-n", ns, "deploy/kto-operator", "--tail=60", check=False).stdout

    wait_for(lambda: (apps.read_namespaced_deployment("kto-operator", ns).status.ready_replicas or 0) == 1,
             120, "operator Deployment Ready")
    (pod,) = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=kto-operator").items
    assert pod.spec.security_context.run_as_user == 1000680000
    wait_for(lambda: _http_ok(f"http://{pod.status.pod_ip}:8081/healthz"), 30, "kopf liveness endpoint")
    try:
        _cr(bed).create_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": "in-pod"},
            "spec": {"image": STANDIN_IMAGE, "experiment": f"in-pod-{ns}",
                     "parameters": {"epochs": 2, "sleep": 0.2}}})
        status = wait_for(lambda: (s := _run_status(bed, ns, "in-pod")).get("phase") in
                          ("Succeeded", "Failed", "Cancelled") and s, 120, "TrainingRun finished")
        assert status["phase"] == "Succeeded", status
        assert mlflow.MlflowClient(bed.env["MLFLOW_TRACKING_URI"]).get_run(status["mlflow"]["runId"]).info.status \
            == "FINISHED"
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5) as resp:
            assert "kto_trainingruns" in resp.read().decode()
        (pod,) = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=kto-operator").items
        assert pod.status.container_statuses[0].restart_count == 0
        _cr(bed).delete_namespaced_custom_object(GROUP, VERSION, ns, "trainingruns", "in-pod")
        wait_for(lambda: _gone(bed, ns, "trainingruns", "in-pod"), 60, "finalizer released")
    finally:
        print(f"---- operator pod log ({ns}) ----\n{operator_log()}")
    refused = [line for line in operator_log().splitlines() if REFUSED.search(line)]
    assert not refused, "\n".join(refused[:20])
