"""The trainer against the bed's real MinIO and MLflow (no fakes): as a process the way a pod runs it, and
as a Kubernetes Job of the kto-trainer image (Dockerfile.trainer) under an OpenShift-like arbitrary UID."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from kto_trainer.annotations import dataset_fingerprint
from kto_trainer.config import ANNOTATION_KEY
from kto_trainer.dataset_tool import upload_dataset
from kto_trainer.datasets import synthetic_images
from mlflow import MlflowClient

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def _operator_style_run(mlflow_uri: str) -> tuple[MlflowClient, str, str]:
    """What the operator does before the Job starts: an experiment and a run, the run id handed over."""
    client = MlflowClient(mlflow_uri)
    experiment_id = client.create_experiment(f"trainer-it-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id, tags={"kto.dev/test": "trainer"}).info.run_id
    return client, experiment_id, run_id


def _trainer(bed, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, **bed.env, "MLFLOW_RUN_ID": run_id, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "kto_trainer", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_trainer_logs_a_complete_run_from_minio(  # type: ignore[no-untyped-def]
    bed, s3, bucket, mlflow_uri, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = synthetic_images(30, 32, seed=11)
    assert upload_dataset(s3, bucket, images, workers=8) == 31
    client, _, run_id = _operator_style_run(mlflow_uri)

    result = _trainer(
        bed, run_id, f"--bucket={bucket}", "--epochs=1", "--image_size=32", "--batch_size=8", "--weights=none",
        "--seed=5", f"--working_dir={tmp_path / 'work'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for key, value in {"epochs": "1", "batch_size": "8", "image_size": "32", "bucket": bucket,
                       "split_ratio_train": "0.8", "split_ratio_evaluate": "0.1", "split_ratio_test": "0.1",
                       "weights": "none", "seed": "5"}.items():
        assert params[key] == value, key
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0], key
    assert {"test_loss", "test_accuracy"} <= set(run.data.metrics)
    annotation = s3.get_object(Bucket=bucket, Key=ANNOTATION_KEY)["Body"].read()
    assert run.data.tags["dataset.fingerprint"] == dataset_fingerprint(annotation, 5)

    artifacts = _artifacts(client, run_id)
    assert {"annotations/extract.json", "annotations/split_train.json", "annotations/split_evaluate.json",
            "annotations/split_test.json", "model_plot.png", "confusion_matrix.png"} <= artifacts
    # mlflow's fluent readers take the server from the environment, as in a pod.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    extract = mlflow.artifacts.load_dict(f"runs:/{run_id}/annotations/extract.json")
    splits = [mlflow.artifacts.load_dict(f"runs:/{run_id}/annotations/split_{n}.json")
              for n in ("train", "evaluate", "test")]
    assert extract == {name: label for name, (label, _) in images.items()}
    assert sum(len(s) for s in splits) == 30 and [len(s) for s in splits] == [24, 3, 3]
    plot = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model_plot.png", dst_path=str(tmp_path)))
    assert plot.read_bytes().startswith(b"\x89PNG")

    model_uri = run.data.tags["kto.model_uri"]
    info = mlflow.models.get_model_info(model_uri)
    assert "keras" in info.flavors and info.signature is not None
    model = mlflow.keras.load_model(model_uri)
    probabilities = model.predict(np.zeros((3, 32, 32, 3), dtype=np.float32), verbose=0)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_missing_object_in_minio_is_one_error_line(bed, s3, bucket, mlflow_uri, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = synthetic_images(12, 32, seed=2)
    upload_dataset(s3, bucket, images, workers=4)
    missing = sorted(images)[4]
    s3.delete_object(Bucket=bucket, Key=f"dataset/extract/{missing}")
    client, _, run_id = _operator_style_run(mlflow_uri)

    result = _trainer(bed, run_id, f"--bucket={bucket}", "--weights=none", "--image_size=32",
                      f"--working_dir={tmp_path}")

    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"kto-train: error: object not found: s3://{bucket}/dataset/extract/{missing}"
    assert "Traceback" not in result.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert missing in run.data.tags["kto.error"]


def test_kto_trainer_image_runs_as_a_job(  # type: ignore[no-untyped-def]
        bed, openshift_namespace, s3, bucket, mlflow_uri) -> None:
    from kubernetes import client as k8s

    namespace = openshift_namespace
    upload_dataset(s3, bucket, synthetic_images(15, 32, seed=3), workers=4)
    mlflow_client, experiment_id, run_id = _operator_style_run(mlflow_uri)
    core, batch = k8s.CoreV1Api(bed.api()), k8s.BatchV1Api(bed.api())
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": bed.env["AWS_ACCESS_KEY_ID"],
                       "AWS_SECRET_ACCESS_KEY": bed.env["AWS_SECRET_ACCESS_KEY"]},
    })
    secret_env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": "s3", "key": key}}}
                  for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    plain_env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment_id,
                 "MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_S3_ENDPOINT_URL": bed.env["MLFLOW_S3_ENDPOINT_URL"]}
    batch.create_namespaced_job(namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "trainer", "image": "kto-trainer:0.1.0",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "args": [f"--bucket={bucket}", "--epochs=1", "--image_size=32", "--batch_size=8", "--weights=none"],
                "env": [*({"name": k, "value": v} for k, v in plain_env.items()), *secret_env],
            }]}}},
    })

    def finished() -> str | None:
        job = batch.read_namespaced_job("train", namespace)
        return next((c.type for c in job.status.conditions or [] if c.status == "True"
                     and c.type in ("Complete", "Failed")), None)

    assert wait_for(finished, 480, "trainer Job to finish") == "Complete"  # slow when the bed is busy
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in mlflow_client.get_metric_history(run_id, "val_accuracy")] == [0]
