"""Fixtures of the trainer's unit tests: tiny datasets, a local MLflow store, an in-memory fake S3.

The fake S3 is for unit tests only; integration tests use the bed's real MinIO.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from kto_trainer.datasets import synthetic_images, write_layout
from PIL import Image


def png_bytes(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def client_error(code: str, operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


@dataclass
class FakeS3:
    """The few boto3 S3 client calls the trainer makes, with boto3's error shapes."""

    buckets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    denied: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_get: Any = None  # hook called with the key before each get_object
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _bucket(self, name: str, operation: str) -> dict[str, bytes]:
        if self.denied:
            raise client_error("AccessDenied", operation)
        if name not in self.buckets:
            raise client_error("NoSuchBucket", operation)
        return self.buckets[name]

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        with self._lock:
            self.calls.append(("get_object", Key))
        if self.on_get is not None:
            self.on_get(Key)
        objects = self._bucket(Bucket, "GetObject")
        if Key not in objects:
            raise client_error("NoSuchKey")
        return {"Body": io.BytesIO(objects[Key])}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> dict[str, Any]:
        self._bucket(Bucket, "PutObject")[Key] = bytes(Body)
        return {}

    def head_bucket(self, Bucket: str) -> dict[str, Any]:
        if Bucket not in self.buckets:
            raise client_error("404", "HeadBucket")
        return {}

    def create_bucket(self, Bucket: str) -> dict[str, Any]:
        if Bucket in self.buckets:
            raise client_error("BucketAlreadyOwnedByYou", "CreateBucket")
        self.buckets[Bucket] = {}
        return {}


@pytest.fixture
def fake_s3() -> FakeS3:
    return FakeS3()


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """The course layout of 30 synthetic 32x32 images (10 per class) in a local folder."""
    root = tmp_path / "dataset-root"
    write_layout(root, synthetic_images(30, 32, seed=1))
    return root


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One SQLite tracking store per session (creating its tables takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root


@pytest.fixture
def mlflow_env(mlflow_store: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh experiment (artifacts under tmp_path) selected through the environment, as in a pod."""
    import mlflow

    uri, _ = mlflow_store
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment(f"unit-{tmp_path.name}", artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield experiment_id
    # Autolog patches keras.Model.fit process-wide: undo it so other tests' fits log nothing anywhere.
    mlflow.autolog(disable=True)
    while mlflow.active_run() is not None:
        mlflow.end_run()
