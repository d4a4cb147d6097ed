"""The platform's credentials on the bed: the MinIO and MySQL images, started from the shipped templates with the
template's placeholder passwords, refuse to start and say why; the trainers' MinIO user made by MLflow's prepare
step (MinIO's real admin API) reads the dataset bucket and nothing else."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from kubernetes import client

from tests.helpers import load_module, wait_for
from tests.integration.deployables_support import of_kind, pod_from, render, workspace

pytestmark = pytest.mark.integration

PLACEHOLDER = base64.b64encode(b"change-me").decode()


def _terminated(core: client.CoreV1Api, ns: str, name: str) -> Any:
    def check() -> Any:
        statuses = core.read_namespaced_pod(name, ns).status.container_statuses or []
        state = statuses[0] if statuses else None
        return state and (state.state.terminated or (state.last_state and state.last_state.terminated))

    return wait_for(check, 120, f"{name} ended")


def test_minio_and_mysql_refuse_placeholder_passwords(bed: Any, openshift_namespace: str, tmp_path: Path) -> None:
    ns, core = openshift_namespace, client.CoreV1Api(bed.api())
    docs = render(bed, workspace(bed.repo, tmp_path / "ws"), "platform/bed")
    (secret,) = of_kind(docs, "Secret")
    for key in ("MINIO_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"):
        secret["data"][key] = PLACEHOLDER
    bed.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all([secret, *of_kind(docs, "ConfigMap")]))
    expected = {"minio": "MINIO_ROOT_PASSWORD", "mysql": "MYSQL_ROOT_PASSWORD"}
    for workload in of_kind(docs, "Deployment", "StatefulSet"):
        name = workload["metadata"]["name"]
        if name not in expected:
            continue
        pod = pod_from(workload, f"{name}-refused")
        pod["spec"]["restartPolicy"] = "Never"
        # No claim needed: the guard runs before the program touches its data.
        pod["spec"]["volumes"] = [v if "persistentVolumeClaim" not in v else {"name": v["name"], "emptyDir": {}}
                                  for v in pod["spec"]["volumes"]]
        core.create_namespaced_pod(ns, pod)
    for name, key in expected.items():
        ended = _terminated(core, ns, f"{name}-refused")
        log = bed.kubectl("logs", "-n", ns, f"{name}-refused").stdout
        assert ended.exit_code == 1, (name, ended, log)
        assert log.strip() == (f"refusing to start: {key} still 'change-me': set real values in secrets.env "
                               "and re-apply"), log


def test_trainer_user_reads_the_dataset_bucket_only(bed: Any, s3: Any, bucket: str) -> None:
    prepare = load_module("kto_prepare", "manifests/platform/base/prepare.py")
    endpoint, root = bed.env["MLFLOW_S3_ENDPOINT_URL"], (bed.env["AWS_ACCESS_KEY_ID"], bed.env["AWS_SECRET_ACCESS_KEY"])
    reader, secret = f"t-reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    other = f"t-other-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="dataset/a.png", Body=b"png")
    s3.put_object(Bucket=other, Key="secret.txt", Body=b"no")
    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    admin = MinioAdmin(endpoint=endpoint.split("://", 1)[1], credentials=StaticProvider(*root), secure=False)
    try:
        prepare.ensure_reader(endpoint, *root, reader, secret, bucket)
        prepare.ensure_reader(endpoint, *root, reader, secret, bucket)  # every MLflow start: idempotent
        trainer = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=reader, aws_secret_access_key=secret,
                               region_name="us-east-1")

        def readable() -> bytes | None:
            try:
                return bytes(trainer.get_object(Bucket=bucket, Key="dataset/a.png")["Body"].read())
            except ClientError:
                return None  # MinIO applies a new user's policy within moments

        assert wait_for(readable, 10, "the reader's access") == b"png"
        for denied in (lambda: trainer.put_object(Bucket=bucket, Key="dataset/b.png", Body=b"x"),
                       lambda: trainer.get_object(Bucket=other, Key="secret.txt"),
                       lambda: trainer.create_bucket(Bucket=f"t-new-{uuid.uuid4().hex[:8]}")):
            with pytest.raises(ClientError) as refused:
                denied()
            assert refused.value.response["Error"]["Code"] == "AccessDenied"
        # MinIO lists the buckets a user may use, instead of refusing the listing.
        assert {b["Name"] for b in trainer.list_buckets()["Buckets"]} == {bucket}
        with pytest.raises(prepare.PrepareError, match="must differ from MINIO_ROOT_USER"):
            prepare.ensure_reader(endpoint, *root, root[0], secret, bucket)
    finally:
        admin.user_remove(reader)
        admin.policy_remove(prepare.READER_POLICY)
