from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from kto_trainer.annotations import parse_annotations
from kto_trainer.dataset_tool import main, upload_dataset
from kto_trainer.datasets import digits_images, layout_objects, synthetic_images, write_layout
from kto_trainer.errors import ConfigError

from .conftest import FakeS3


def test_synthetic_images_are_balanced_sized_and_seeded() -> None:
    images = synthetic_images(31, 24, seed=5)
    assert len(images) == 31
    assert Counter(label for label, _ in images.values()) == {"cat": 11, "dog": 10, "other": 10}
    import io

    from PIL import Image

    first = next(iter(images.values()))[1]
    assert Image.open(io.BytesIO(first)).size == (24, 24)
    assert synthetic_images(31, 24, seed=5) == images
    assert synthetic_images(31, 24, seed=6) != images


def test_synthetic_classes_differ_by_colour() -> None:
    """Learnable: the mean of each class's dominant channel stands out."""
    import io

    import numpy as np
    from PIL import Image

    means: dict[str, list[np.ndarray]] = {}
    for label, body in synthetic_images(60, 32, seed=0).values():
        means.setdefault(label, []).append(np.asarray(Image.open(io.BytesIO(body))).mean(axis=(0, 1)))
    for channel, label in enumerate(("cat", "dog", "other")):
        average = np.mean(means[label], axis=0)
        assert int(np.argmax(average)) == channel


def test_digits_images() -> None:
    images = digits_images(30, 16, seed=0, digits=(3, 5, 7))
    assert Counter(label for label, _ in images.values()) == {"cat": 10, "dog": 10, "other": 10}
    with pytest.raises(ConfigError, match="count must be between 3 and"):
        digits_images(10_000, 16)
    with pytest.raises(ConfigError, match="3 distinct digits"):
        digits_images(30, 16, digits=(1, 1, 2))


def test_layout_is_the_course_layout(tmp_path: Path) -> None:
    images = synthetic_images(6, 16)
    objects = layout_objects(images)
    extract, classes = parse_annotations(objects["dataset/cats_dogs_others-annotations.json"])
    assert classes == ["cat", "dog", "other"] and set(extract) == set(images)
    annotation_key = "dataset/cats_dogs_others-annotations.json"
    assert {f"dataset/extract/{name}" for name in images} == set(objects) - {annotation_key}
    assert write_layout(tmp_path, images) == 7
    assert (tmp_path / "dataset/extract" / next(iter(images))).is_file()


def test_upload_creates_the_bucket(fake_s3: FakeS3) -> None:
    assert upload_dataset(fake_s3, "cats-dogs-other", synthetic_images(9, 16), workers=3) == 10
    stored = fake_s3.buckets["cats-dogs-other"]
    assert len(json.loads(stored["dataset/cats_dogs_others-annotations.json"])["annotations"]) == 9


def test_cli_writes_a_local_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", "digits", "--count", "12", "--size", "16", "--out", str(tmp_path)]) == 0
    assert "12 images" in capsys.readouterr().out
    assert len(list((tmp_path / "dataset/extract").iterdir())) == 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "imagenet"], "invalid choice"),
        (["--count", "2"], "count must be >= 3"),
        (["--digits", "a,b,c", "--source", "digits"], "expected digits like 0,1,2"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_cli_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        code = main([*argv, "--out", str(tmp_path)])
        raise SystemExit(code)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("kto-dataset: error:")
