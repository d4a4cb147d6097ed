"""manifests/platform/bed on the bed, in a namespace enforcing Pod Security `restricted`: MySQL (MariaDB
stand-in), MinIO and MLflow come up Ready from the manifests alone, MLflow's init step creates the buckets,
and a run logged through MLflow lands in MySQL (params, metrics) and in MinIO (artifacts)."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import wait_for
from tests.integration.deployables_support import label_restricted, of_kind, render, workspace

pytestmark = pytest.mark.integration

PLATFORM_IMAGES = ("quay.io/sclorg/mysql-80-c9s:c9s", "kto-mlflow:0.1.0")
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _mariadb() -> str | None:
    return shutil.which("mariadbd") or next((p for p in ("/usr/sbin/mariadbd",) if os.access(p, os.X_OK)), None)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _agent_maps_platform_images(bed: Any, ns: str) -> bool:
    """The running node agent knows the platform's images (it reads its image rules when it starts)."""
    core = client.CoreV1Api(bed.api())
    containers = [{"name": f"c{i}", "image": image, "command": ["python", "-c", "pass"],
                   "securityContext": RESTRICTED_CONTAINER} for i, image in enumerate(PLATFORM_IMAGES)]
    core.create_namespaced_pod(ns, {"metadata": {"name": "image-probe"}, "spec": {
        "restartPolicy": "Never", "containers": containers,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}})

    def outcome() -> str | None:
        pod = core.read_namespaced_pod("image-probe", ns)
        if pod.status.phase in ("Succeeded", "Failed"):
            return pod.status.phase
        for st in pod.status.container_statuses or []:
            if st.state.waiting and st.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                return "NoImage"
        return None

    result = wait_for(outcome, 60, "image probe pod")
    core.delete_namespaced_pod("image-probe", ns, grace_period_seconds=0)
    return result == "Succeeded"


def with_ports(docs: list[dict[str, Any]], mysql: int, minio: int, console: int, mlflow: int) -> list[dict[str, Any]]:
    """The bed overlay moved to free ports (a demo may hold the overlay's own ports on the shared bed)."""
    ports = {"mysql": [mysql], "minio": [minio, console], "mlflow": [mlflow]}
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("kto-platform-config"):
            doc["data"].update(KTO_MYSQL_PORT=str(mysql), KTO_MINIO_PORT=str(minio),
                               KTO_MINIO_CONSOLE_PORT=str(console), KTO_S3_ENDPOINT=f"http://127.0.0.1:{minio}",
                               KTO_MLFLOW_PORT=str(mlflow))
        if doc["kind"] in ("Deployment", "StatefulSet"):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            for port, number in zip(container["ports"], ports[doc["metadata"]["name"]], strict=True):
                port["containerPort"] = number
    return docs


def _ready(bed: Any, ns: str) -> bool:
    apps = client.AppsV1Api(bed.api())
    sets = [apps.read_namespaced_stateful_set("mysql", ns).status]
    sets += [apps.read_namespaced_deployment(n, ns).status for n in ("minio", "mlflow")]
    return all((s.ready_replicas or 0) >= 1 for s in sets)


def _pod_logs(bed: Any, ns: str) -> str:
    out = []
    for pod in client.CoreV1Api(bed.api()).list_namespaced_pod(ns).items:
        for c in (pod.spec.init_containers or []) + pod.spec.containers:
            res = bed.kubectl("logs", "-n", ns, pod.metadata.name, "-c", c.name, "--tail=30", check=False)
            out.append(f"--- {pod.metadata.name}/{c.name} ---\n{res.stdout}{res.stderr}")
    return "\n".join(out)


needs_mariadb = pytest.mark.skipif(_mariadb() is None,
                                   reason="needs Debian's mariadb-server (apt-get install -y mariadb-server)")


def bring_up(bed: Any, namespace: str, tmp_path: Path, entry: str = "platform/bed"
             ) -> tuple[dict[str, str], tuple[int, int, int, int]]:
    """The platform from `entry` (on free ports) Ready in a restricted namespace: (secrets, ports)."""
    label_restricted(bed, namespace)
    if not _agent_maps_platform_images(bed, namespace):
        pytest.skip("the running node agent predates the platform image rules: restart the bed (make bed-down bed)")
    manifests = workspace(bed.repo, tmp_path / "ws")
    if entry == "platform/bed-auth":  # the bed overlay plus the openshift overlay's MLflow basic auth
        (manifests / entry).mkdir()
        (manifests / entry / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["../bed"], "components": ["../components/mlflow-auth"]}))
    secrets = dict(line.split("=", 1) for line in (manifests / "platform/secrets/secrets.env").read_text().splitlines()
                   if line and not line.startswith("#"))
    ports = _free_ports(4)
    docs = with_ports(render(bed, manifests, entry), *ports)
    assert {d["kind"] for d in of_kind(docs, "StatefulSet", "Deployment")} == {"StatefulSet", "Deployment"}
    applied = bed.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert applied.returncode == 0 and "PodSecurity" not in applied.stderr, applied.stderr
    started = time.monotonic()
    try:
        wait_for(lambda: _ready(bed, namespace), 240, "MySQL, MinIO and MLflow Ready", interval=1)
    except AssertionError:
        print(_pod_logs(bed, namespace))
        raise
    print(f"platform Ready in {time.monotonic() - started:.1f} s")
    return secrets, (ports[0], ports[1], ports[2], ports[3])


@needs_mariadb
def test_platform_comes_up_on_the_bed_and_tracks_a_run(bed: Any, namespace: str, tmp_path: Path) -> None:
    import boto3
    import mlflow
    import pymysql

    secrets, (mysql_port, minio_port, _console, mlflow_port) = bring_up(bed, namespace, tmp_path)

    # MLflow on MySQL, artifacts proxied to MinIO.
    uri = f"http://127.0.0.1:{mlflow_port}"
    tracking = mlflow.MlflowClient(uri)
    experiment = tracking.create_experiment(f"platform-{uuid.uuid4().hex[:6]}")
    run = tracking.create_run(experiment)
    tracking.log_param(run.info.run_id, "epochs", "4")
    tracking.log_metric(run.info.run_id, "accuracy", 0.75)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    tracking.log_artifact(run.info.run_id, str(note))
    tracking.set_terminated(run.info.run_id)
    assert tracking.get_run(run.info.run_id).data.metrics == {"accuracy": 0.75}

    db = pymysql.connect(host="127.0.0.1", port=mysql_port, user=secrets["MYSQL_USER"],
                         password=secrets["MYSQL_PASSWORD"], database=secrets["MYSQL_DATABASE"])
    with db.cursor() as cur:
        cur.execute("SELECT `key`, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == (("epochs", "4"),)
    db.close()

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{minio_port}", region_name="us-east-1",
                      aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"])
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} >= {"mlflow-artifacts", "cats-dogs-other"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys

    # A new MLflow pod (restart, upgrade, wake) finds the schema current and the run still there.
    core = client.CoreV1Api(bed.api())
    (old,) = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=mlflow").items
    core.delete_namespaced_pod(old.metadata.name, namespace)

    def replaced() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=mlflow").items
        return any(p.metadata.uid != old.metadata.uid and p.status.container_statuses
                   and p.status.container_statuses[0].ready for p in pods)

    wait_for(replaced, 180, "a new Ready MLflow pod", interval=1)
    assert mlflow.MlflowClient(uri).get_run(run.info.run_id).data.params == {"epochs": "4"}


@needs_mariadb
def test_mlflow_basic_auth_component(bed: Any, namespace: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The openshift overlay's MLflow login (components/mlflow-auth) on the bed: anonymous requests are
    refused, the admin from the kto-platform Secret (what the operator and trainers use) gets in."""
    import mlflow
    import requests

    secrets, (_mysql, _minio, _console, mlflow_port) = bring_up(bed, namespace, tmp_path, "platform/bed-auth")
    uri = f"http://127.0.0.1:{mlflow_port}"
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    admin = (secrets["MLFLOW_TRACKING_USERNAME"], secrets["MLFLOW_TRACKING_PASSWORD"])
    assert requests.get(search, auth=(admin[0], "wrong-password"), timeout=10).status_code == 401
    assert requests.get(search, auth=admin, timeout=10).status_code == 200
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    tracking = mlflow.MlflowClient(uri)
    run = tracking.create_run(tracking.create_experiment(f"auth-{uuid.uuid4().hex[:6]}"))
    tracking.log_metric(run.info.run_id, "accuracy", 0.5)
    assert tracking.get_run(run.info.run_id).data.metrics == {"accuracy": 0.5}
