"""Init step of the MLflow pod: refuse placeholder credentials, wait for MySQL and MinIO, create or upgrade
MLflow's database schema (`mlflow db upgrade`: creates the tables on an empty database, migrates them after an
MLflow upgrade, does nothing when current), create the buckets and the trainers' read-only MinIO user, and
(when basic auth is on) write MLflow's auth config. Runs with the MLflow image's Python (mlflow, boto3, minio).

Environment: KTO_MYSQL_HOST, KTO_MYSQL_PORT, KTO_S3_ENDPOINT, KTO_ARTIFACT_BUCKET, KTO_DATASET_BUCKET,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (MinIO's root user), MLFLOW_BACKEND_STORE_URI; optional
KTO_READER_ACCESS_KEY with KTO_READER_SECRET_KEY (the trainers' user, allowed to read KTO_DATASET_BUCKET only),
KTO_MLFLOW_AUTH_CONFIG (path of the auth .ini to write) with KTO_MLFLOW_AUTH_DB (its users' SQLite file), and
KTO_PREPARE_TIMEOUT (seconds, default 600). Exit 1 on failure: the kubelet restarts the init container with
back-off, and MLflow never starts against a missing database or bucket.
"""

from __future__ import annotations

import configparser
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

PLACEHOLDER = "change-me"
SECRET_KEYS = ("MYSQL_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KTO_READER_ACCESS_KEY",
               "KTO_READER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD",
               "MLFLOW_FLASK_SERVER_SECRET_KEY")
# The trainers' MinIO policy: read the dataset (and the weights next to it), nothing else.
READER_POLICY = "kto-dataset-read"


class PrepareError(RuntimeError):
    """Something the platform needs is not there (after waiting) or not acceptable."""


def placeholder_keys(env: Mapping[str, str]) -> list[str]:
    """Credentials still set to the template's placeholder (never run an internet-facing platform so)."""
    return [k for k in SECRET_KEYS if env.get(k, "").strip().lower() == PLACEHOLDER]


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait(check: Callable[[], bool], what: str, timeout: float, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PrepareError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)
    print(f"prepare: {what} ready", flush=True)


def ensure_buckets(endpoint: str, key: str, secret: str, buckets: list[str]) -> list[str]:
    """Create the missing buckets; returns the ones created."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    created = []
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for name in buckets:
            if name in existing:
                continue
            try:
                s3.create_bucket(Bucket=name)
                created.append(name)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
    except (BotoCoreError, ClientError) as err:
        raise PrepareError(f"S3 {endpoint}: {err}") from err
    return created


def reader_policy(bucket: str) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}


def ensure_reader(endpoint: str, key: str, secret: str, reader: str, reader_secret: str, bucket: str) -> None:
    """Create or update the MinIO user `reader` with only READER_POLICY (MinIO's admin API; the request bodies
    are encrypted with the root secret, which the `minio` package does). Idempotent: every start re-applies it,
    so a changed secret in secrets.env takes effect at the next start."""
    from urllib.parse import urlsplit

    from minio.credentials import StaticProvider
    from minio.error import MinioAdminException
    from minio.minioadmin import MinioAdmin

    if reader == key:
        raise PrepareError("the trainers' AWS_ACCESS_KEY_ID must differ from MINIO_ROOT_USER (the root user)")
    url = urlsplit(endpoint)
    admin = MinioAdmin(endpoint=url.netloc, credentials=StaticProvider(key, secret), secure=url.scheme == "https")
    try:
        admin.policy_add(READER_POLICY, policy=reader_policy(bucket))
        admin.user_add(reader, reader_secret)
        try:
            admin.attach_policy([READER_POLICY], user=reader)
        except MinioAdminException as err:
            if "PolicyChangeAlreadyApplied" not in str(err):
                raise
    except (MinioAdminException, OSError) as err:
        raise PrepareError(f"MinIO user {reader}: {err}") from err


def upgrade_database(uri: str) -> None:
    """`mlflow db upgrade URI`, in this process: the URI holds the password, kept out of process listings."""
    from mlflow.db import upgrade
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        upgrade.main([uri], prog_name="mlflow db upgrade", standalone_mode=False)
    except SystemExit as done:  # click exits on its own errors
        if done.code:
            raise PrepareError(f"mlflow db upgrade failed (exit {done.code})") from None
    except (SQLAlchemyError, MlflowException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PrepareError(f"mlflow db upgrade: {first}") from err


def auth_config(database_uri: str) -> str:
    """MLflow basic-auth settings: read-only by default for non-admin users. The admin user comes from
    MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD (the platform Secret), not from this file."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": database_uri,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    config.write(_Sink())
    return "".join(lines)


def write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def run(env: Mapping[str, str]) -> None:
    bad = placeholder_keys(env)
    if bad:
        raise PrepareError(f"{', '.join(bad)} still '{PLACEHOLDER}': set real values in secrets.env and re-apply")
    timeout = float(env.get("KTO_PREPARE_TIMEOUT", "600"))
    host, port = env["KTO_MYSQL_HOST"], int(env["KTO_MYSQL_PORT"])
    endpoint = env["KTO_S3_ENDPOINT"].rstrip("/")
    wait(lambda: tcp_open(host, port), f"MySQL {host}:{port}", timeout)
    wait(lambda: http_ok(f"{endpoint}/minio/health/ready"), f"MinIO {endpoint}", timeout)
    upgrade_database(env["MLFLOW_BACKEND_STORE_URI"])
    print("prepare: MLflow database schema current", flush=True)
    buckets = [b for b in (env.get("KTO_ARTIFACT_BUCKET"), env.get("KTO_DATASET_BUCKET")) if b]
    created = ensure_buckets(endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], buckets)
    print(f"prepare: buckets {', '.join(buckets)} present (created: {', '.join(created) or 'none'})", flush=True)
    reader, dataset = env.get("KTO_READER_ACCESS_KEY"), env.get("KTO_DATASET_BUCKET")
    if reader and dataset:
        ensure_reader(endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], reader,
                      env["KTO_READER_SECRET_KEY"], dataset)
        print(f"prepare: MinIO user {reader} may read bucket {dataset} only", flush=True)
    auth_path = env.get("KTO_MLFLOW_AUTH_CONFIG")
    if auth_path:
        # Users in their own SQLite file (KTO_MLFLOW_AUTH_DB, in the pod): MLflow's auth tables cannot share
        # the tracking database (their constraint names collide with the tracking schema's in MySQL).
        write_private(auth_path, auth_config(f"sqlite:///{env['KTO_MLFLOW_AUTH_DB']}"))
        print(f"prepare: MLflow auth config written to {auth_path}", flush=True)


def main() -> int:
    try:
        run(os.environ)
    except (PrepareError, KeyError, ValueError) as err:
        print(f"prepare: error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
