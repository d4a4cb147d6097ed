"""Step 1: the annotation file -> `extract` ({fileName: label}) and the sorted list of classes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import DatasetError

Extract = dict[str, str]


def _check_name(kind: str, value: Any, index: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"annotation #{index}: {kind} must be a non-empty string, got {value!r}")
    # Both end up as path components under the working directory: refuse anything that could escape it.
    if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise DatasetError(f"annotation #{index}: {kind} {value!r} is not a plain name")
    return value


def parse_annotations(data: bytes, source: str = "annotation file") -> tuple[Extract, list[str]]:
    """Parse `{"annotations": [{"fileName": "x.png", "annotation": {"label": "cat"}}, ...]}`.

    Returns `(extract, classes)`; classes are sorted so that class indices are stable across runs.
    """
    if not data.strip():
        raise DatasetError(f"{source} is empty")
    try:
        document = json.loads(data)
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source} is not UTF-8 text: {error}") from None
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(document, dict) or "annotations" not in document:
        raise DatasetError(f'{source} must be a JSON object with an "annotations" list')
    entries = document["annotations"]
    if not isinstance(entries, list):
        raise DatasetError(f'{source}: "annotations" must be a list, got {type(entries).__name__}')
    if not entries:
        raise DatasetError(f'{source} has no annotations ("annotations" is empty)')

    extract: Extract = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(f"{source}: annotation #{index} must be an object, got {entry!r}")
        annotation = entry.get("annotation")
        if not isinstance(annotation, dict) or "label" not in annotation:
            raise DatasetError(f'{source}: annotation #{index} has no "annotation": {{"label": ...}}')
        file_name = _check_name("fileName", entry.get("fileName"), index)
        label = _check_name("label", annotation["label"], index)
        previous = extract.get(file_name)
        if previous is not None and previous != label:
            raise DatasetError(f"{source}: {file_name!r} is labelled both {previous!r} and {label!r}")
        extract[file_name] = label
    return extract, sorted(set(extract.values()))


def load_annotation_file(path: Path) -> tuple[Extract, list[str]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read annotation file {path}: {error.strerror}") from None
    return parse_annotations(data, source=str(path))


def build_annotations(extract: Extract) -> bytes:
    """The inverse of `parse_annotations` (used by the dataset tool)."""
    entries = [{"fileName": name, "annotation": {"label": label}} for name, label in extract.items()]
    return json.dumps({"annotations": entries}, indent=1).encode()


def dataset_fingerprint(annotation_bytes: bytes, seed: int) -> str:
    """Identifies the exact dataset and split: same annotation file + same seed = same split."""
    digest = hashlib.sha256(annotation_bytes)
    digest.update(f"\nsplit-seed={seed}".encode())
    return digest.hexdigest()
