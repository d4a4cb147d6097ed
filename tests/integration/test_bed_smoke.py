"""Proof that the bed is real: each test exercises a real Kubernetes controller, the real node or a server."""

from __future__ import annotations

import uuid

import psutil
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import sleep_command, wait_for

pytestmark = pytest.mark.integration


def _job(name: str, command: list[str], image: str = "python:3.11", **container: object) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": image, "command": command, **container}]}}},
    }


def _job_pod(core: client.CoreV1Api, ns: str, job: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items
    return pods[0] if pods else None


def _terminated(core: client.CoreV1Api, ns: str, job: str) -> client.V1ContainerStateTerminated | None:
    pod = _job_pod(core, ns, job)
    if pod and pod.status.container_statuses:
        return pod.status.container_statuses[0].state.terminated
    return None


def _job_condition(batch: client.BatchV1Api, ns: str, name: str, kind: str) -> bool:
    job = batch.read_namespaced_job(name, ns)
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or [])


def test_job_completes_through_real_job_controller(bed, namespace):
    batch, core = client.BatchV1Api(bed.api()), client.CoreV1Api(bed.api())
    batch.create_namespaced_job(namespace, _job("answer", ["python", "-c", "print(42)"]))
    wait_for(lambda: _job_condition(batch, namespace, "answer", "Complete"), 90, "Job Complete")
    term = _terminated(core, namespace, "answer")
    assert term is not None and term.exit_code == 0 and term.reason == "Completed"
    assert _job_pod(core, namespace, "answer").status.phase == "Succeeded"
    assert bed.kubectl("logs", "-n", namespace, "job/answer").stdout.strip() == "42"


def test_exit_code_fails_job(bed, namespace):
    batch, core = client.BatchV1Api(bed.api()), client.CoreV1Api(bed.api())
    batch.create_namespaced_job(namespace, _job("three", ["python", "-c", "import sys; sys.exit(3)"]))
    wait_for(lambda: _job_condition(batch, namespace, "three", "Failed"), 90, "Job Failed")
    term = _terminated(core, namespace, "three")
    assert term is not None and term.exit_code == 3 and term.reason == "Error"


def test_memory_limit_gives_oomkilled(bed, namespace):
    batch, core = client.BatchV1Api(bed.api()), client.CoreV1Api(bed.api())
    hog = "import time; b = bytearray(400 * 2**20); time.sleep(60)"
    batch.create_namespaced_job(namespace, _job("hog", ["python", "-c", hog],
                                                resources={"limits": {"memory": "100Mi"}}))
    term = wait_for(lambda: _terminated(core, namespace, "hog"), 90, "hog terminated")
    assert term.reason == "OOMKilled" and term.exit_code == 137


def test_missing_image_is_err_image_pull(bed, namespace):
    batch, core = client.BatchV1Api(bed.api()), client.CoreV1Api(bed.api())
    # Any registry resolves to the bed's own (nothing is pulled from outside): a name it lacks fails the pull.
    batch.create_namespaced_job(namespace, _job("nope", ["true"], image="registry.invalid/nope:1"))

    def waiting_reason() -> str | None:
        pod = _job_pod(core, namespace, "nope")
        if pod and pod.status.container_statuses:
            waiting = pod.status.container_statuses[0].state.waiting
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                return str(waiting.reason)
        return None

    assert wait_for(waiting_reason, 60, "ErrImagePull") in ("ErrImagePull", "ImagePullBackOff")
    assert _job_pod(core, namespace, "nope").status.phase == "Pending"


def test_background_delete_kills_process(bed, namespace):
    batch, core = client.BatchV1Api(bed.api()), client.CoreV1Api(bed.api())
    marker = uuid.uuid4().hex
    sleeper = [*sleep_command(600)[:2], f"{sleep_command(600)[2]}  # {marker}"]
    batch.create_namespaced_job(namespace, _job("sleeper", sleeper))

    def process() -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline"]):
            if any(marker in part for part in p.info["cmdline"] or []):
                return p
        return None

    proc = wait_for(process, 90, "sleeper process")
    wait_for(lambda: (_job_pod(core, namespace, "sleeper") or client.V1Pod()).status.phase == "Running", 30,
             "pod Running")
    batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    wait_for(lambda: _job_pod(core, namespace, "sleeper") is None, 90, "pod removed by the garbage collector")
    wait_for(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 30, "process killed")


def test_rbac_forbids_missing_verb(bed, namespace):
    from kubernetes import config

    core, rbac = client.CoreV1Api(bed.api()), client.RbacAuthorizationV1Api(bed.api())
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read-pods"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    admin_cfg = bed.api().configuration
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = admin_cfg.host, admin_cfg.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CoreV1Api(client.ApiClient(cfg))
    as_reader.list_namespaced_pod(namespace)  # allowed by the Role
    with pytest.raises(ApiException) as err:
        as_reader.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert err.value.status == 403
    del config


def test_crd_schema_rejects_bad_object(bed, namespace):
    ext = client.ApiextensionsV1Api(bed.api())
    group = f"g{uuid.uuid4().hex[:8]}.kto.dev"
    ext.create_custom_resource_definition({
        "metadata": {"name": f"widgets.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "required": ["size"],
                                                              "properties": {"size": {"type": "integer",
                                                                                      "minimum": 1}}}}}}}]}})
    custom = client.CustomObjectsApi(bed.api())

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"widgets.{group}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    try:
        wait_for(established, 30, "CRD established")
        custom.create_namespaced_custom_object(group, "v1", namespace, "widgets",
                                               {"apiVersion": f"{group}/v1", "kind": "Widget",
                                                "metadata": {"name": "ok"}, "spec": {"size": 2}})
        with pytest.raises(ApiException) as err:
            custom.create_namespaced_custom_object(group, "v1", namespace, "widgets",
                                                   {"apiVersion": f"{group}/v1", "kind": "Widget",
                                                    "metadata": {"name": "bad"}, "spec": {"size": 0}})
        assert err.value.status == 422
        assert "spec.size" in err.value.body
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def test_deployment_scales_down_and_up(bed, namespace):
    apps, core = client.AppsV1Api(bed.api()), client.CoreV1Api(bed.api())
    labels = {"app": "idle"}
    apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "idle"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "idle", "image": "python:3.11",
                                     "command": sleep_command(3600)}]}}}})

    def running(n: int) -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=idle").items
        return len(pods) == n and all(p.status.phase == "Running" for p in pods)

    wait_for(lambda: running(2), 90, "2 pods Running")
    apps.patch_namespaced_deployment_scale("idle", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=idle").items, 90, "0 pods")
    apps.patch_namespaced_deployment_scale("idle", namespace, {"spec": {"replicas": 2}})
    wait_for(lambda: running(2), 90, "2 pods Running again")


def test_minio_round_trip(s3, bucket):
    body = uuid.uuid4().bytes * 100
    s3.put_object(Bucket=bucket, Key="dir/blob.bin", Body=body)
    assert s3.get_object(Bucket=bucket, Key="dir/blob.bin")["Body"].read() == body


def test_mlflow_run_with_metric_and_artifact_in_minio(bed, s3, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    mlf = MlflowClient(tracking_uri=mlflow_uri)
    exp_id = mlf.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = mlf.create_run(exp_id)
    mlf.log_metric(run.info.run_id, "accuracy", 0.75, step=1)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello bed")
    mlf.log_artifact(run.info.run_id, str(artifact))
    mlf.set_terminated(run.info.run_id)
    assert mlf.get_run(run.info.run_id).data.metrics["accuracy"] == 0.75
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bed.artifact_bucket).get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys


def test_server_is_the_pinned_release_and_node_ready(bed):
    import json

    from kto_bed.paths import pinned_versions

    pinned = pinned_versions()
    version = json.loads(bed.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned["K8S_VERSION"]
    nodes = json.loads(bed.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert ready["Ready"] == "True"
    wide = bed.kubectl("get", "nodes", "-o", "wide").stdout
    assert f"containerd://{pinned['CONTAINERD_VERSION'].lstrip('v')}" in wide, wide
    assert pinned["K8S_VERSION"] in wide, wide


def test_kubectl_logs_reads_the_pod_log_through_the_apiserver(bed, namespace):
    batch = client.BatchV1Api(bed.api())
    batch.create_namespaced_job(namespace, _job("talker", ["sh", "-c", "echo hello from pod; exec sleep 600"]))
    out = wait_for(lambda: "hello from pod" in bed.kubectl("logs", "-n", namespace, "job/talker",
                                                           check=False).stdout, 90, "kubectl logs")
    assert out


def test_kubectl_exec_runs_in_the_container(bed, namespace):
    core = client.CoreV1Api(bed.api())
    core.create_namespaced_pod(namespace, {"metadata": {"name": "shell"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": "python:3.11", "command": ["sleep", "600"]}]}})
    wait_for(lambda: core.read_namespaced_pod("shell", namespace).status.phase == "Running", 90, "Running")
    done = bed.kubectl("exec", "-n", namespace, "shell", "--", "sh", "-c", "echo $HOSTNAME; cat /proc/1/cmdline")
    assert done.stdout.splitlines()[0] == "shell"
    assert done.stdout.splitlines()[1].startswith("sleep")


def test_readiness_probe_gates_pod_ready(bed, namespace):
    core = client.CoreV1Api(bed.api())
    flag = "/tmp/ready"
    core.create_namespaced_pod(namespace, {"metadata": {"name": "probed"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": "python:3.11", "command": ["sleep", "600"],
                        "readinessProbe": {"exec": {"command": ["test", "-f", flag]}, "periodSeconds": 1}}]}})

    def ready() -> bool:
        pod = core.read_namespaced_pod("probed", namespace)
        return bool(pod.status.container_statuses and pod.status.container_statuses[0].ready)

    wait_for(lambda: core.read_namespaced_pod("probed", namespace).status.phase == "Running", 90, "Running")
    assert not ready()
    bed.kubectl("exec", "-n", namespace, "probed", "--", "touch", flag)
    wait_for(ready, 30, "readiness probe passing")
