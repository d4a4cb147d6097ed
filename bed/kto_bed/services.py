"""MinIO (built from Go) and the MLflow tracking server on the bed's address (host and pods reach them), with
generated credentials."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procs
from .controlplane import Ports, wait
from .network import BED_IP
from .paths import BedPaths, minio_bin

ARTIFACT_BUCKET = "mlflow-artifacts"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def ensure(cls, path: Path) -> Credentials:
        """Generate once per bed; kept in .bed/secrets.json (0600), never in git."""
        if path.exists():
            raw = json.loads(path.read_text())
            return cls(raw["access_key"], raw["secret_key"])
        creds = cls("kto" + secrets.token_hex(6), secrets.token_urlsafe(24))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"access_key": creds.access_key, "secret_key": creds.secret_key}))
        path.chmod(0o600)
        return creds


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def s3_endpoint(ports: Ports) -> str:
    return f"http://{BED_IP}:{ports.minio}"


def tracking_uri(ports: Ports) -> str:
    return f"http://{BED_IP}:{ports.mlflow}"


def start_minio(paths: BedPaths, ports: Ports, creds: Credentials) -> None:
    if not procs.is_running(paths, "minio"):
        if not minio_bin().exists():
            raise RuntimeError(f"{minio_bin()} missing: run bed/build.sh first")
        data = paths.data / "minio"
        data.mkdir(parents=True, exist_ok=True)
        procs.start(paths, "minio", [
            str(minio_bin()), "server", str(data), f"--address={BED_IP}:{ports.minio}",
            f"--console-address=127.0.0.1:{ports.minio_console}", "--quiet",
        ], env={"MINIO_ROOT_USER": creds.access_key, "MINIO_ROOT_PASSWORD": creds.secret_key,
                "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"})
    wait(lambda: _http_ok(f"{s3_endpoint(ports)}/minio/health/ready"), 60, "MinIO", paths.logs / "minio.log")
    ensure_bucket(ports, creds, ARTIFACT_BUCKET)


def s3_client(ports: Ports, creds: Credentials) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3_endpoint(ports), aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key, region_name="us-east-1",
                        config=Config(signature_version="s3v4", retries={"max_attempts": 3}))


def ensure_bucket(ports: Ports, creds: Credentials, bucket: str) -> None:
    from botocore.exceptions import ClientError

    s3 = s3_client(ports, creds)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def start_mlflow(paths: BedPaths, ports: Ports, creds: Credentials) -> None:
    if not procs.is_running(paths, "mlflow"):
        store = paths.data / "mlflow"
        store.mkdir(parents=True, exist_ok=True)
        procs.start(paths, "mlflow", [
            sys.executable, "-m", "mlflow", "server",
            "--host", BED_IP, "--port", str(ports.mlflow),
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            # The server proxies artifacts, so clients (and pods) need no S3 credentials for them.
            "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}",
            "--workers", "2",
        ], env={"MLFLOW_S3_ENDPOINT_URL": s3_endpoint(ports), "AWS_ACCESS_KEY_ID": creds.access_key,
                "AWS_SECRET_ACCESS_KEY": creds.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
                # The background job runner (huey workers, for GenAI jobs) costs ~8 processes we never use.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"},
            cwd=store)
    wait(lambda: _http_ok(f"{tracking_uri(ports)}/health"), 120, "MLflow", paths.logs / "mlflow.log")
