from __future__ import annotations

import json
from pathlib import Path

import pytest
from kto_trainer.annotations import (
    build_annotations,
    dataset_fingerprint,
    load_annotation_file,
    parse_annotations,
)
from kto_trainer.errors import DatasetError


def doc(*entries: object) -> bytes:
    return json.dumps({"annotations": list(entries)}).encode()


def entry(name: str, label: str) -> dict[str, object]:
    return {"fileName": name, "annotation": {"label": label}}


def test_parses_extract_and_sorted_classes() -> None:
    extract, classes = parse_annotations(doc(entry("b.png", "dog"), entry("a.png", "cat"), entry("c.png", "dog")))
    assert extract == {"b.png": "dog", "a.png": "cat", "c.png": "dog"}
    assert classes == ["cat", "dog"]


def test_extra_fields_are_ignored() -> None:
    data = json.dumps(
        {"version": 2, "annotations": [{"fileName": "a.png", "annotation": {"label": "cat", "by": "x"}, "id": 1}]}
    ).encode()
    assert parse_annotations(data) == ({"a.png": "cat"}, ["cat"])


def test_repeated_file_with_same_label_is_kept_once() -> None:
    assert parse_annotations(doc(entry("a.png", "cat"), entry("a.png", "cat")))[0] == {"a.png": "cat"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b'{"annotations": [', "not valid JSON"),
        (b"\xff\xfe\x00", "not"),
        (b"[]", '"annotations" list'),
        (b'{"images": []}', '"annotations" list'),
        (b'{"annotations": {}}', "must be a list"),
        (b'{"annotations": []}', "no annotations"),
        (b'{"annotations": [3]}', "must be an object"),
        (doc({"fileName": "a.png"}), 'has no "annotation"'),
        (doc({"fileName": "a.png", "annotation": {"lbl": "cat"}}), 'has no "annotation"'),
        (doc(entry("", "cat")), "fileName must be a non-empty string"),
        (doc({"fileName": 7, "annotation": {"label": "cat"}}), "fileName must be a non-empty string"),
        (doc(entry("a.png", "")), "label must be a non-empty string"),
        (doc(entry("../../etc/passwd", "cat")), "is not a plain name"),
        (doc(entry("a.png", "../cat")), "is not a plain name"),
        (doc(entry("a.png", "cat"), entry("a.png", "dog")), "labelled both 'cat' and 'dog'"),
    ],
)
def test_malformed_files_raise_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=None) as caught:
        parse_annotations(data, source="s3://b/k.json")
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_json_error_names_line_and_column() -> None:
    with pytest.raises(DatasetError, match=r"s3://b/k.json is not valid JSON: .* line 2 column"):
        parse_annotations(b'{"annotations":\n ]', source="s3://b/k.json")


def test_build_annotations_round_trips() -> None:
    extract = {"x.png": "cat", "y.png": "other"}
    assert parse_annotations(build_annotations(extract)) == (extract, ["cat", "other"])


def test_fingerprint_depends_on_bytes_and_seed_only() -> None:
    data = doc(entry("a.png", "cat"))
    assert dataset_fingerprint(data, 1) == dataset_fingerprint(data, 1)
    assert len(dataset_fingerprint(data, 1)) == 64
    assert dataset_fingerprint(data, 1) != dataset_fingerprint(data, 2)
    assert dataset_fingerprint(data, 1) != dataset_fingerprint(data + b" ", 1)


def test_load_annotation_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(doc(entry("a.png", "cat")))
    assert load_annotation_file(path) == ({"a.png": "cat"}, ["cat"])
    with pytest.raises(DatasetError, match="cannot read annotation file"):
        load_annotation_file(tmp_path / "missing.json")
