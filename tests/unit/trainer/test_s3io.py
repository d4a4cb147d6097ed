from __future__ import annotations

import threading
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError
from kto_trainer.errors import ObjectMissingError, StorageError
from kto_trainer.s3io import (
    DirStore,
    S3Settings,
    S3Store,
    download_extract,
    ensure_bucket,
    make_client,
    parse_s3_url,
    translate_error,
    upload_objects,
)

from .conftest import FakeS3


def filled(fake: FakeS3, extract: dict[str, str]) -> FakeS3:
    fake.buckets["b"] = {f"dataset/extract/{name}": name.encode() for name in extract}
    return fake


def test_download_extract_writes_label_folders(fake_s3: FakeS3, tmp_path: Path) -> None:
    extract = {"a.png": "cat", "b.png": "dog", "c.png": "cat"}
    paths = download_extract(S3Store(filled(fake_s3, extract), "b"), extract, tmp_path / "train", workers=3)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "train/cat/a.png", "train/cat/c.png", "train/dog/b.png",
    ]
    assert (tmp_path / "train/dog/b.png").read_bytes() == b"b.png"
    assert not list(tmp_path.rglob("*.part"))
    assert sorted(key for _, key in fake_s3.calls) == [f"dataset/extract/{n}" for n in ("a.png", "b.png", "c.png")]


def test_downloads_run_concurrently(fake_s3: FakeS3, tmp_path: Path) -> None:
    extract = {f"{i}.png": "cat" for i in range(8)}
    # Four gets must be in flight at once to cross the barrier: a one-at-a-time loop breaks it.
    barrier = threading.Barrier(4, timeout=10)
    filled(fake_s3, extract).on_get = lambda key: barrier.wait()
    download_extract(S3Store(fake_s3, "b"), extract, tmp_path, workers=4)
    assert len(list((tmp_path / "cat").iterdir())) == 8


def test_missing_object_names_the_key(fake_s3: FakeS3, tmp_path: Path) -> None:
    extract = {"a.png": "cat", "gone.png": "dog"}
    filled(fake_s3, {"a.png": "cat"})
    with pytest.raises(ObjectMissingError, match=r"^object not found: s3://b/dataset/extract/gone.png$") as caught:
        download_extract(S3Store(fake_s3, "b"), extract, tmp_path, workers=2)
    assert caught.value.key == "dataset/extract/gone.png"


def test_missing_bucket_and_denied_access(fake_s3: FakeS3) -> None:
    with pytest.raises(StorageError, match="bucket not found: s3://nope"):
        S3Store(fake_s3, "nope").read("k")
    fake_s3.denied = True
    with pytest.raises(StorageError, match=r"access denied to s3://b/k .*AWS_ACCESS_KEY_ID"):
        S3Store(fake_s3, "b").read("k")


def test_connection_and_credential_errors_are_one_line() -> None:
    unreachable = translate_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "b", "k")
    assert "cannot reach S3 endpoint" in str(unreachable) and "MLFLOW_S3_ENDPOINT_URL" in str(unreachable)
    assert "AWS_SECRET_ACCESS_KEY" in str(translate_error(NoCredentialsError(), "b", "k"))


def test_settings_are_read_when_the_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-1")
    client = make_client()
    assert client.meta.endpoint_url == "http://127.0.0.1:9999"
    assert client._request_signer._credentials.access_key == "id-1"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:8888")
    assert make_client().meta.endpoint_url == "http://127.0.0.1:8888"


def test_settings_from_explicit_env() -> None:
    settings = S3Settings.from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"})
    assert settings == S3Settings(None, "a", "s", "us-east-1")


def test_ensure_bucket_and_upload(fake_s3: FakeS3) -> None:
    assert ensure_bucket(fake_s3, "new") is True
    assert ensure_bucket(fake_s3, "new") is False
    assert upload_objects(fake_s3, "new", {"k1": b"1", "k2": b"2"}, workers=2) == 2
    assert fake_s3.buckets["new"] == {"k1": b"1", "k2": b"2"}
    with pytest.raises(StorageError, match="bucket not found: s3://other"):
        upload_objects(fake_s3, "other", {"k": b""})


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b.h5") == ("bucket", "a/b.h5")
    for bad in ("http://x/y", "s3://bucket", "s3:///key"):
        with pytest.raises(StorageError):
            parse_s3_url(bad)


def test_dir_store(tmp_path: Path) -> None:
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset/x").write_bytes(b"x")
    store = DirStore(tmp_path)
    assert store.read("dataset/x") == b"x"
    store.download("dataset/x", tmp_path / "out/cat/x")
    assert (tmp_path / "out/cat/x").read_bytes() == b"x"
    with pytest.raises(StorageError, match="object not found"):
        store.read("dataset/missing")
