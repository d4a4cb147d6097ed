"""manifests/platform/bed on the bed, in an OpenShift-like namespace (arbitrary UIDs, Pod Security
`restricted`): MySQL, MinIO and MLflow come up Ready from the manifests alone, reach each other by Service
name, MLflow's init step creates the buckets, and a run logged through MLflow lands in MySQL (params,
metrics) and in MinIO (artifacts)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import wait_for
from tests.integration.deployables_support import of_kind, render, workspace

pytestmark = pytest.mark.integration

RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def service_address(bed: Any, ns: str, name: str) -> str:
    """A Service's ClusterIP: the host reaches it through kube-proxy, as pods do."""
    return str(client.CoreV1Api(bed.api()).read_namespaced_service(name, ns).spec.cluster_ip)


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


def bring_up(bed: Any, namespace: str, tmp_path: Path, entry: str = "platform/bed") -> dict[str, str]:
    """The platform from `entry` Ready in an OpenShift-like restricted namespace; returns its secrets."""
    manifests = workspace(bed.repo, tmp_path / "ws")
    if entry == "platform/bed-auth":  # the bed overlay plus the openshift overlay's MLflow basic auth
        (manifests / entry).mkdir()
        (manifests / entry / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["../bed"], "components": ["../components/mlflow-auth"]}))
    secrets = dict(line.split("=", 1) for line in (manifests / "platform/secrets/secrets.env").read_text().splitlines()
                   if line and not line.startswith("#"))
    docs = render(bed, manifests, entry)
    assert {d["kind"] for d in of_kind(docs, "StatefulSet", "Deployment")} == {"StatefulSet", "Deployment"}
    applied = bed.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert applied.returncode == 0 and "PodSecurity" not in applied.stderr, applied.stderr
    started = time.monotonic()
    try:
        wait_for(lambda: _ready(bed, namespace), 300, "MySQL, MinIO and MLflow Ready", interval=1)
    except AssertionError:
        print(_pod_logs(bed, namespace))
        raise
    print(f"platform Ready in {time.monotonic() - started:.1f} s")
    return secrets


def test_platform_comes_up_on_the_bed_and_tracks_a_run(bed: Any, openshift_namespace: str, tmp_path: Path) -> None:
    import boto3
    import mlflow
    import pymysql

    namespace = openshift_namespace
    secrets = bring_up(bed, namespace, tmp_path)

    # Every part runs as the namespace's arbitrary UID, in group 0.
    core = client.CoreV1Api(bed.api())
    for pod in core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/part-of=kto-mlflow").items:
        uid = bed.kubectl("exec", "-n", namespace, pod.metadata.name, "-c", pod.spec.containers[0].name,
                          "--", "id", "-u").stdout.strip()
        assert uid == "1000680000", (pod.metadata.name, uid)

    # From a pod of the namespace, the Service names answer (cluster DNS + kube-proxy).
    probe = ("import urllib.request as u\n"
             "for url in ('http://minio:9000/minio/health/ready', 'http://mlflow:5000/health'):\n"
             "    print(url, u.urlopen(url, timeout=10).status)\n")
    core.create_namespaced_pod(namespace, {"metadata": {"name": "client"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "kto-mlflow:0.1.0",
                                                  "command": ["python", "-c", probe],
                                                  "securityContext": RESTRICTED_CONTAINER}],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}}})
    wait_for(lambda: core.read_namespaced_pod("client", namespace).status.phase in ("Succeeded", "Failed"), 120,
             "client pod finished")
    answers = bed.kubectl("logs", "-n", namespace, "client").stdout.split("\n")
    assert answers[:2] == ["http://minio:9000/minio/health/ready 200", "http://mlflow:5000/health 200"], answers

    # MLflow on MySQL, artifacts proxied to MinIO.
    uri = f"http://{service_address(bed, namespace, 'mlflow')}:5000"
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

    db = pymysql.connect(host=service_address(bed, namespace, "mysql"), port=3306, user=secrets["MYSQL_USER"],
                         password=secrets["MYSQL_PASSWORD"], database=secrets["MYSQL_DATABASE"])
    with db.cursor() as cur:
        cur.execute("SELECT `key`, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == (("epochs", "4"),)
    db.close()

    minio = f"http://{service_address(bed, namespace, 'minio')}:9000"
    s3 = boto3.client("s3", endpoint_url=minio, region_name="us-east-1",
                      aws_access_key_id=secrets["MINIO_ROOT_USER"],
                      aws_secret_access_key=secrets["MINIO_ROOT_PASSWORD"])
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} >= {"mlflow-artifacts", "cats-dogs-other"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys

    # The trainers' credentials (the Secret's AWS_* keys, a MinIO user made by MLflow's prepare step) read the
    # dataset bucket and nothing else.
    from botocore.exceptions import ClientError

    s3.put_object(Bucket="cats-dogs-other", Key="dataset/probe.txt", Body=b"probe")
    trainer = boto3.client("s3", endpoint_url=minio, region_name="us-east-1",
                           aws_access_key_id=secrets["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=secrets["AWS_SECRET_ACCESS_KEY"])
    assert trainer.get_object(Bucket="cats-dogs-other", Key="dataset/probe.txt")["Body"].read() == b"probe"
    assert [o["Key"] for o in trainer.list_objects_v2(Bucket="cats-dogs-other")["Contents"]] == ["dataset/probe.txt"]
    for denied in (lambda: trainer.put_object(Bucket="cats-dogs-other", Key="dataset/x", Body=b"x"),
                   lambda: trainer.delete_object(Bucket="cats-dogs-other", Key="dataset/probe.txt"),
                   lambda: trainer.list_objects_v2(Bucket="mlflow-artifacts"),
                   lambda: trainer.get_object(Bucket="mlflow-artifacts", Key=keys[0])):
        with pytest.raises(ClientError) as refused:
            denied()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert {b["Name"] for b in trainer.list_buckets()["Buckets"]} == {"cats-dogs-other"}  # MinIO: what it may use

    # A new MLflow pod (restart, upgrade, wake) finds the schema current and the run still there.
    (old,) = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=mlflow").items
    core.delete_namespaced_pod(old.metadata.name, namespace)

    def replaced() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=mlflow").items
        return any(p.metadata.uid != old.metadata.uid and p.status.container_statuses
                   and p.status.container_statuses[0].ready for p in pods)

    wait_for(replaced, 180, "a new Ready MLflow pod", interval=1)
    assert mlflow.MlflowClient(uri).get_run(run.info.run_id).data.params == {"epochs": "4"}


def test_mlflow_basic_auth_component(bed: Any, openshift_namespace: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The openshift overlay's MLflow login (components/mlflow-auth) on the bed: anonymous requests are
    refused, the admin from the kto-platform Secret (what the operator and trainers use) gets in."""
    import mlflow
    import requests

    secrets = bring_up(bed, openshift_namespace, tmp_path, "platform/bed-auth")
    uri = f"http://{service_address(bed, openshift_namespace, 'mlflow')}:5000"
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
