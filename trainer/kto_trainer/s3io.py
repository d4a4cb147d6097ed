"""Step 2b: S3 access. Concurrent downloads into `<dir>/<label>/<fileName>`, clear errors.

Settings are read from the environment when a client is made (never at import): the endpoint from
MLFLOW_S3_ENDPOINT_URL, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (a Secret in the pod).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from .annotations import Extract
from .config import EXTRACT_PREFIX
from .errors import ObjectMissingError, StorageError

S3Client = Any  # boto3 clients are generated at run time and carry no static type.
T = TypeVar("T")
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        return cls(
            endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            region=env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )


def make_client(settings: S3Settings | None = None, max_connections: int = 32) -> S3Client:
    settings = S3Settings.from_env() if settings is None else settings
    config = Config(
        max_pool_connections=max_connections,  # one pooled connection per download thread
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"},  # MinIO
        # botocore >= 1.36 computes a CRC of every body by default; on thousands of small images that is
        # a third of the client's CPU per GET. TCP and Content-Length still guard the transfer.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
        config=config,
    )


def translate_error(error: Exception, bucket: str, key: str | None = None) -> StorageError:
    """One readable line for each way an S3 call fails."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return StorageError(f"bucket not found: s3://{bucket} (needed for {where})")
        if code in _MISSING_CODES and key:
            return ObjectMissingError(bucket, key)
        if code in _MISSING_CODES:
            return StorageError(f"bucket not found: s3://{bucket}")
        if code in _DENIED_CODES:
            return StorageError(
                f"access denied to {where} ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
        return StorageError(f"S3 error on {where}: {code or error}")
    if isinstance(error, NoCredentialsError):
        return StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(error, EndpointConnectionError):
        return StorageError(f"cannot reach S3 endpoint for {where}: {error} (check MLFLOW_S3_ENDPOINT_URL)")
    return StorageError(f"S3 error on {where}: {error}")


class ObjectStore(Protocol):
    """Where the course layout lives: an S3 bucket, or a local folder with the same keys."""

    def url(self, key: str) -> str: ...

    def read(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> None: ...


@dataclass(frozen=True)
class S3Store:
    client: S3Client
    bucket: str

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def read(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return bytes(response["Body"].read())
        except (ClientError, BotoCoreError) as error:
            raise translate_error(error, self.bucket, key) from None

    def download(self, key: str, dest: Path) -> None:
        # One GET per object (the course's download_file adds a HEAD and a transfer thread pool per file).
        _write_atomically(dest, self.read(key))


@dataclass(frozen=True)
class DirStore:
    root: Path

    def url(self, key: str) -> str:
        return str(self.root / key)

    def read(self, key: str) -> bytes:
        path = self.root / key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"object not found: {path}") from None
        except OSError as error:
            raise StorageError(f"cannot read {path}: {error.strerror}") from None

    def download(self, key: str, dest: Path) -> None:
        source = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, dest)
        except FileNotFoundError:
            raise StorageError(f"object not found: {source}") from None


def _write_atomically(dest: Path, data: bytes) -> None:
    # A killed pod must not leave a truncated image that a retry would then take as complete.
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    partial.write_bytes(data)
    partial.replace(dest)


def run_concurrently(tasks: Iterable[Callable[[], T]], workers: int) -> list[T]:
    """Run the tasks on a thread pool; the first error cancels what has not started and is re-raised."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3") as pool:
        futures = [pool.submit(task) for task in tasks]
        done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [error for future in futures if future in done and (error := future.exception())]
        if errors:
            for future in not_done:
                future.cancel()
            raise errors[0]
        return [future.result() for future in futures]


def download_extract(
    store: ObjectStore,
    extract: Extract,
    dest_dir: Path,
    prefix: str = EXTRACT_PREFIX,
    workers: int = 16,
) -> list[Path]:
    """Download every `prefix + fileName` of `extract` to `dest_dir/<label>/<fileName>`, concurrently."""
    targets = [(prefix + name, dest_dir / label / name) for name, label in extract.items()]
    for label in set(extract.values()):
        (dest_dir / label).mkdir(parents=True, exist_ok=True)

    def task(key: str, dest: Path) -> Callable[[], Path]:
        def run() -> Path:
            store.download(key, dest)
            return dest

        return run

    return run_concurrently((task(key, dest) for key, dest in targets), workers)


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create the bucket if it does not exist; True when it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise translate_error(error, bucket) from None
    except BotoCoreError as error:
        raise translate_error(error, bucket) from None
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise translate_error(error, bucket) from None
    return True


def upload_objects(client: S3Client, bucket: str, objects: Mapping[str, bytes], workers: int = 16) -> int:
    def task(key: str, body: bytes) -> Callable[[], None]:
        def run() -> None:
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
            except (ClientError, BotoCoreError) as error:
                raise translate_error(error, bucket, key) from None

        return run

    run_concurrently((task(key, body) for key, body in objects.items()), workers)
    return len(objects)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> ("bucket", "some/key")."""
    if not url.startswith("s3://"):
        raise StorageError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise StorageError(f"an s3:// URL needs a bucket and a key: {url!r}")
    return bucket, key
