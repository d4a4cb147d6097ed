# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""TrainingRun operator on the bed: real kube-apiserver, Job controller, garbage collector, MLflow server.
The operator runs as a subprocess scoped to the test namespace; trainers are the stand-in trainer."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    MlflowServer,
    Operator,
    Runs,
    mlflow_client,
    operator,
    runs,
    runs_for_uid,
    trainingrun_crd,
)

pytestmark = pytest.mark.integration

RATIOS = {"split_ratio_train": 0.8, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1}
IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


def subsequence(seen: list[str], order: list[str]) -> bool:
    """`seen` only moves forward through `order` (no phase goes back)."""
    positions = [order.index(p) for p in seen]
    return positions == sorted(positions)


def mlflow_run(uri: str, run_id: str) -> Any:
    return mlflow_client(uri).get_run(run_id)


def test_happy_path(operator: Operator, runs: Runs, bed: Any, mlflow_uri: str) -> None:
    access, secret = runs.s3_secret()
    operator.start()
    model = f"it-model-{runs.namespace}"
    runs.submit("happy", parameters={**RATIOS, "batch_size": 8, "epochs": 3, "sleep": 1.0,
                                     "test_accuracy": 0.93, "log_model": True},
                s3={"endpoint": bed.env["MLFLOW_S3_ENDPOINT_URL"], "credentialsSecret": "s3-creds"},
                registerModel={"name": model, "metric": "test_accuracy", "threshold": 0.9})
    seen: list[str] = []
    st = runs.wait_phase("happy", ("Succeeded", "Failed"), 120, seen)
    assert st["phase"] == "Succeeded", st
    assert seen[-1] == "Succeeded" and "Running" in seen
    assert subsequence(seen, ["Pending", "Running", "Succeeded"]), seen

    # Status: MLflow ids, final metrics, progress, registered model, times, conditions.
    run_id = st["mlflow"]["runId"]
    assert st["metrics"]["test_accuracy"] == pytest.approx(0.93)
    assert st["primaryMetric"] == "test_accuracy=0.93"
    assert st["progress"] == {"epoch": 3, "epochs": 3}
    assert st["modelVersion"] == "1"
    assert st["jobName"] == "happy" and st["startTime"] and st["completionTime"]
    assert st["mlflow"]["url"].endswith(f"/#/experiments/{st['mlflow']['experimentId']}/runs/{run_id}")
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["Running"] == "False"
    tr = runs.get("happy")
    assert tr is not None
    assert st["observedGeneration"] == tr["metadata"]["generation"]

    # MLflow: FINISHED, tags, params, per-epoch history, model version.
    run = mlflow_run(mlflow_uri, run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["kto.dev/uid"] == tr["metadata"]["uid"]
    assert (tags["kto.dev/namespace"], tags["kto.dev/trainingrun"], tags["kto.dev/job"]) == (
        runs.namespace, "happy", "happy")
    assert tags["kto.dev/image"] == "kto-standin-trainer:0.1.0"
    # Reproducibility: the digest the node actually ran, in the status and on the run.
    [pod] = runs.pods("happy")
    image_id = pod.status.container_statuses[0].image_id
    assert image_id.startswith("docker.io/library/kto-standin-trainer@sha256:"), image_id
    assert st["imageID"] == tags["kto.dev/image-id"] == image_id
    assert run.data.params["epochs"] == "3" and run.data.params["split_ratio_train"] == "0.8"
    history = mlflow_client(mlflow_uri).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    [version] = mlflow_client(mlflow_uri).search_model_versions(f"name = '{model}'")
    assert version.run_id == run_id
    assert len(runs_for_uid(mlflow_uri, f"it-{runs.namespace}", tr["metadata"]["uid"])) == 1

    # The Job: one, owned, credentials only by reference; no secret value anywhere.
    [job] = runs.jobs()
    assert job.metadata.owner_references[0].uid == tr["metadata"]["uid"]
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == "s3-creds"
    assert env["MLFLOW_RUN_ID"].value == run_id
    job_text = json.dumps(bed.api().sanitize_for_serialization(job))
    texts = {"job": job_text, "trainingrun": json.dumps(tr), "mlflow": json.dumps([tags, run.data.params]),
             "operator log": operator.log()}
    for where, text in texts.items():
        assert secret not in text and access not in text, f"credential leaked into the {where}"

    # kubectl get ktr: the printer columns.
    out = bed.kubectl("get", "ktr", "-n", runs.namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "EXPERIMENT", "RUN-ID", "METRIC", "AGE"]
    assert out[1].split()[:5] == ["happy", "Succeeded", f"it-{runs.namespace}", run_id, "test_accuracy=0.93"]

    # Events on the creation, the start and the end (not on each step between), and the metrics endpoint.
    reasons = {e.reason for e in runs.events("happy")}
    assert {"JobCreated", "Running", "Completed"} <= reasons, reasons
    assert not reasons & {"CreatingRun", "RunCreated", "PodPending", "ContainerCreating", "PodTerminated"}, reasons
    metrics = operator.metrics()
    assert 'kto_trainingruns{phase="Succeeded"} 1.0' in metrics
    assert "kto_trainingrun_submit_to_job_seconds_count 1.0" in metrics


def test_exit_code_fails_with_log_tail_and_mlflow_failed(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    # A long name: the Job gets a valid, hashed name. The trainer leaves its run RUNNING: the operator
    # must close it.
    name = "exit-code-" + "x" * 70
    runs.submit(name, parameters={"epochs": 3, "sleep": 0.2, "fail_at_epoch": 2, "exit_code": 3,
                                  "leave_running": True})
    st = runs.wait_phase(name, ("Succeeded", "Failed"), 90)
    assert (st["phase"], st["reason"]) == ("Failed", "ExitCode"), st
    assert "exited with code 3" in st["message"]
    assert "simulated failure at epoch 2" in st["message"]  # the log tail
    assert "epoch 2/3" in st["message"]
    assert len(st["jobName"]) <= 63 and st["jobName"] != name
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "FAILED"
    assert {"ExitCode"} <= {e.reason for e in runs.events(name) if e.type == "Warning"}


def test_oom_killed(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("oom", parameters={"epochs": 50, "sleep": 0.2, "alloc_mb": 900},
                resources={"limits": {"memory": "450Mi"}})
    st = runs.wait_phase("oom", ("Succeeded", "Failed"), 90)
    assert (st["phase"], st["reason"]) == ("Failed", "OOMKilled"), st
    assert "450Mi" in st["message"]
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "FAILED"


def test_unmapped_image_fails_fast(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    submitted = time.monotonic()
    runs.submit("no-image", image="registry.example.com/team/missing:1", parameters={"epochs": 1})
    st = runs.wait_phase("no-image", ("Succeeded", "Failed"), 60)
    assert time.monotonic() - submitted < 60
    assert st["phase"] == "Failed" and st["reason"] in IMAGE_PULL_REASONS, st
    assert "fix spec.image" in st["message"]
    wait_for(lambda: not runs.jobs() and not runs.pods("no-image"), 60, "the Job and its pod gone")
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "FAILED"


def test_deadline_exceeded(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("deadline", activeDeadlineSeconds=4, parameters={"epochs": 200, "sleep": 0.5})
    st = runs.wait_phase("deadline", ("Succeeded", "Failed"), 90)
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded"), st
    assert "activeDeadlineSeconds=4" in st["message"]
    wait_for(lambda: not runs.pods("deadline"), 60, "the trainer pod gone")
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "FAILED"


def test_delete_while_running(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("doomed", parameters={"epochs": 300, "sleep": 0.5})
    st = runs.wait_phase("doomed", "Running", 90)
    run_id = st["mlflow"]["runId"]
    wait_for(lambda: runs.pods("doomed"), 30, "the trainer pod")
    runs.delete("doomed")
    wait_for(lambda: runs.get("doomed") is None, 60, "the TrainingRun gone (no stuck finalizer)")
    wait_for(lambda: not runs.jobs() and not runs.pods("doomed"), 60, "the Job and its pods gone")
    assert mlflow_run(mlflow_uri, run_id).info.status == "KILLED"


def test_cancel(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("cancelme", parameters={"epochs": 300, "sleep": 0.5})
    runs.wait_phase("cancelme", "Running", 90)
    # Live progress while running: epochs done (from the MLflow metric history) of the planned 300.
    st = wait_for(lambda: runs.status("cancelme").get("progress", {}).get("epoch", 0) >= 1
                  and runs.status("cancelme"), 30, "progress epoch >= 1")
    assert st["phase"] == "Running" and st["progress"]["epochs"] == 300
    assert "loss" in st["metrics"]
    runs.patch_spec("cancelme", {"cancel": True})
    st = runs.wait_phase("cancelme", ("Cancelled", "Failed", "Succeeded"), 30)
    assert (st["phase"], st["reason"]) == ("Cancelled", "Cancelled"), st
    assert st["completionTime"]
    wait_for(lambda: not runs.jobs() and not runs.pods("cancelme"), 60, "the Job and its pods gone")
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "KILLED"
    reasons = {e.reason for e in runs.events("cancelme")}
    assert "Cancelled" in reasons and "SpecChangeIgnored" not in reasons
    # The object stays (Cancelled is a final phase), its spec cannot be switched back.
    with pytest.raises(Exception, match="cannot be reverted"):
        runs.patch_spec("cancelme", {"cancel": False})


def test_trainer_pod_passes_restricted_pod_security(operator: Operator, runs: Runs) -> None:
    """The namespace enforces Pod Security 'restricted' (as OpenShift's restricted-v2 does): the Job's pod
    is admitted and the run succeeds."""
    runs.core.patch_namespace(runs.namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}})
    operator.start()
    runs.submit("restricted", parameters={"epochs": 1, "sleep": 0})
    st = runs.wait_phase("restricted", ("Succeeded", "Failed"), 90)
    assert st["phase"] == "Succeeded", st
    failed_creates = [e for e in runs.core.list_namespaced_event(runs.namespace).items if e.reason == "FailedCreate"]
    assert not failed_creates, [e.message for e in failed_creates]


def test_job_deleted_by_ttl_right_away_still_succeeds(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("ephemeral", ttlSecondsAfterFinished=0, parameters={"epochs": 1, "sleep": 0, "test_accuracy": 0.8})
    st = runs.wait_phase("ephemeral", ("Succeeded", "Failed"), 90)
    assert st["phase"] == "Succeeded", st
    assert st["metrics"]["test_accuracy"] == pytest.approx(0.8)
    wait_for(lambda: not runs.jobs(), 30, "the Job deleted by its TTL")
    assert mlflow_run(mlflow_uri, st["mlflow"]["runId"]).info.status == "FINISHED"


def test_invalid_parameter_fails_the_run(operator: Operator, runs: Runs) -> None:
    operator.start()
    # Untyped extra parameters pass the schema; a non-scalar one is refused by the operator.
    runs.submit("nested", parameters={"epochs": 1, "optimizer": {"name": "adam"}})
    st = runs.wait_phase("nested", ("Failed", "Succeeded"), 30)
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec"), st
    assert "optimizer" in st["message"]
    assert not runs.jobs()


def test_mlflow_down_then_up(bed: Any, namespace: str, trainingrun_crd: None, tmp_path: Path, runs: Runs) -> None:
    server = MlflowServer(tmp_path / "mlflow")
    op = Operator(bed, namespace, tmp_path, env={"KTO_MLFLOW_TRACKING_URI": server.uri, "KTO_DELETE_TIMEOUT": "15",
                                                  "KTO_MLFLOW_RETRY_DELAY": "1", "KTO_MLFLOW_RETRY_MAX_DELAY": "4"})
    try:
        op.start()
        runs.submit("patient", parameters={"epochs": 2, "sleep": 0.2})
        st = wait_for(lambda: runs.status("patient").get("reason") == "MlflowUnavailable" and runs.status("patient"),
                      30, "phase Pending reason MlflowUnavailable")
        assert st["phase"] == "Pending" and server.uri.split("//")[1] in st["message"]
        assert not runs.jobs(), "no Job before the MLflow run exists"
        assert "MlflowUnavailable" in {e.reason for e in runs.events("patient")}
        server.start()
        st = runs.wait_phase("patient", ("Succeeded", "Failed"), 120)
        assert st["phase"] == "Succeeded", st
        assert op.alive() and op.starts == 1, "no crash loop"
        tr = runs.get("patient")
        assert tr is not None
        assert len(runs_for_uid(server.uri, f"it-{namespace}", tr["metadata"]["uid"])) == 1
        assert len(runs.jobs()) == 1
        assert mlflow_run(server.uri, st["mlflow"]["runId"]).info.status == "FINISHED"

        # Deleted while MLflow is down for good: bounded retries, then the finalizer lets go.
        runs.submit("orphan", parameters={"epochs": 300, "sleep": 0.5})
        runs.wait_phase("orphan", "Running", 60)
        server.stop()
        runs.delete("orphan")
        wait_for(lambda: runs.get("orphan") is None, 60, "the TrainingRun gone despite MLflow being down")
        wait_for(lambda: not runs.pods("orphan"), 60, "its pods gone")
        assert "MlflowUnavailable" in {e.reason for e in runs.events("orphan") if e.type == "Warning"}
    finally:
        for name in ("patient", "orphan"):
            if runs.get(name) is not None:
                runs.delete(name)
        wait_for(lambda: runs.get("patient") is None and runs.get("orphan") is None, 60, "runs deleted")
        op.stop()
        server.stop()
        print(op.log()[-10000:])


@pytest.mark.parametrize("point", ["run-created", "run-recorded", "job-created", "job-recorded"])
def test_operator_killed_during_creation(point: str, operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    """SIGKILL (a test-only launcher makes the operator kill itself right after that call, as abruptly as an
    OOM or a node loss), then a restart: exactly one Job and one MLflow run, and the run completes."""
    operator.start(crash_at=point)
    runs.submit("crashy", parameters={"epochs": 1, "sleep": 0})
    assert operator.wait_exit(60) == -signal.SIGKILL
    operator.start()
    st = runs.wait_phase("crashy", ("Succeeded", "Failed"), 90)
    assert st["phase"] == "Succeeded", st
    tr = runs.get("crashy")
    assert tr is not None
    assert [j.metadata.name for j in runs.jobs()] == ["crashy"]
    [run] = runs_for_uid(mlflow_uri, f"it-{runs.namespace}", tr["metadata"]["uid"])
    assert run.info.run_id == st["mlflow"]["runId"] and run.info.status == "FINISHED"


def test_operator_killed_at_random_moments(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    """Several runs in flight, the operator SIGKILLed three times at arbitrary moments of their creation."""
    operator.start()
    names = [f"chaos-{i}" for i in range(5)]
    for name in names:
        runs.submit(name, parameters={"epochs": 1, "sleep": 0})
    for delay in (0.3, 0.9, 0.6):
        time.sleep(delay)  # the moment of the kill, not an assertion
        operator.kill(signal.SIGKILL)
        operator.start()
    for name in names:
        assert runs.wait_phase(name, ("Succeeded", "Failed"), 120)["phase"] == "Succeeded"
    assert sorted(j.metadata.name for j in runs.jobs()) == names
    for name in names:
        tr = runs.get(name)
        assert tr is not None
        assert len(runs_for_uid(mlflow_uri, f"it-{runs.namespace}", tr["metadata"]["uid"])) == 1, name


INVALID_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("no image", {"image": None}, "spec.image: Required value"),
    ("empty image", {"image": ""}, "spec.image"),
    ("no experiment", {"experiment": None}, "spec.experiment: Required value"),
    ("ratios sum 0.9", {"parameters": {"split_ratio_train": 0.7, "split_ratio_evaluate": 0.1,
                                       "split_ratio_test": 0.1}}, "must equal 1"),
    ("ratio zero", {"parameters": {**RATIOS, "split_ratio_test": 0, "split_ratio_train": 0.9}},
     "spec.parameters.split_ratio_test"),
    ("ratio one", {"parameters": {"split_ratio_train": 1, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1}},
     "spec.parameters.split_ratio_train"),
    ("two ratios only", {"parameters": {"split_ratio_train": 0.9, "split_ratio_evaluate": 0.1}},
     "must be given together"),
    ("epochs zero", {"parameters": {"epochs": 0}}, "spec.parameters.epochs"),
    ("batch size zero", {"parameters": {"batch_size": 0}}, "spec.parameters.batch_size"),
    ("batch size text", {"parameters": {"batch_size": "64"}}, "spec.parameters.batch_size"),
    ("negative backoff", {"backoffLimit": -1}, "spec.backoffLimit"),
    ("zero deadline", {"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
    ("env overrides run id", {"env": [{"name": "MLFLOW_RUN_ID", "value": "x"}]}, "set by the operator"),
    ("env value and valueFrom", {"env": [{"name": "A", "value": "x", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}}}]}, "either value or valueFrom"),
    ("bad toleration operator", {"tolerations": [{"key": "k", "operator": "Maybe"}]}, "Unsupported value"),
    ("s3 endpoint not a URL", {"s3": {"endpoint": "minio:9000"}}, "spec.s3.endpoint"),
    ("bad memory quantity", {"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    ("registerModel without threshold", {"registerModel": {"name": "m", "metric": "acc"}}, "threshold"),
    ("cancel not a boolean", {"cancel": "yes"}, "spec.cancel"),
    ("image with a space", {"image": "kto trainer:1"}, "spec.image"),
    ("service account not a DNS name", {"serviceAccountName": "Bad_Name"}, "spec.serviceAccountName"),
    ("S3 secret not a DNS name", {"s3": {"credentialsSecret": "S3 creds"}}, "spec.s3.credentialsSecret"),
    ("Job TTL beyond the Job's int32", {"ttlSecondsAfterFinished": 2875451371}, "spec.ttlSecondsAfterFinished"),
    ("env secret key with a slash",
     {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}]}, "secretKeyRef.key"),
]


@pytest.mark.parametrize(("desc", "change", "expected"), INVALID_SPECS, ids=[c[0] for c in INVALID_SPECS])
def test_invalid_spec_rejected_by_api_server(desc: str, change: dict[str, Any], expected: str, runs: Runs) -> None:
    from kubernetes.client.rest import ApiException

    spec: dict[str, Any] = {"image": "kto-standin-trainer:0.1.0", "experiment": "e", **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    body = {"apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(ApiException) as caught:
        runs.custom.create_namespaced_custom_object("kto.dev", "v1alpha1", runs.namespace, "trainingruns", body)
    assert caught.value.status == 422
    message = json.loads(caught.value.body)["message"]
    assert expected in message, message


@pytest.mark.parametrize(("field", "value"), [("image", "other:2"), ("parameters", {"epochs": 9}),
                                              ("experiment", "other"), ("env", [{"name": "A", "value": "b"}])])
def test_spec_is_immutable_except_cancel(field: str, value: Any, runs: Runs) -> None:
    from kubernetes.client.rest import ApiException

    runs.submit("frozen", parameters={"epochs": 1})
    with pytest.raises(ApiException) as caught:
        runs.patch_spec("frozen", {field: value})
    assert caught.value.status == 422
    assert f"spec.{field} is immutable" in json.loads(caught.value.body)["message"]
    runs.patch_spec("frozen", {"cancel": True})  # the one mutable field


def test_kubectl_explain_documents_the_spec(bed: Any, trainingrun_crd: None) -> None:
    out = bed.kubectl("explain", "trainingrun.spec.parameters").stdout
    assert "split_ratio_train" in out and "Fraction of the dataset" in out
