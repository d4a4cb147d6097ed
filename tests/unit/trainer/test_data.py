from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from kto_trainer.data import decode_resize, list_split_files, load_image, make_dataset
from kto_trainer.errors import DatasetError
from PIL import Image

from .conftest import png_bytes


def write_split(root: Path, counts: dict[str, int]) -> None:
    colours = {"cat": (250, 0, 0), "dog": (0, 250, 0), "other": (0, 0, 250)}
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{label}{i}.png").write_bytes(png_bytes(colours[label], size=20 + i))


def test_list_split_files_labels_by_class_index(tmp_path: Path) -> None:
    write_split(tmp_path, {"cat": 2, "other": 1})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    paths, labels = list_split_files(tmp_path, ["cat", "dog", "other"])
    assert [Path(p).name for p in paths] == ["cat0.png", "cat1.png", "other0.png"]
    assert labels == [0, 0, 2]


def test_list_split_files_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no image under"):
        list_split_files(tmp_path, ["cat"])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_decode_resize_any_format_and_mode(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 24), color=128).save(buffer, format=fmt)
    image = decode_resize(buffer.getvalue(), 32)
    assert image.shape == (32, 32, 3) and image.dtype.name == "uint8"
    assert abs(int(np.asarray(image)[5, 5, 0]) - 128) <= 2


def test_make_dataset_batches_and_is_reproducible(tmp_path: Path) -> None:
    write_split(tmp_path, {"cat": 5, "dog": 4})
    paths, labels = list_split_files(tmp_path, ["cat", "dog"])
    dataset = make_dataset(paths, labels, image_size=32, batch_size=4, shuffle=True, seed=1)
    batches = list(dataset)
    assert [int(b[0].shape[0]) for b in batches] == [4, 4, 1]
    assert batches[0][0].shape[1:] == (32, 32, 3) and batches[0][0].dtype.name == "float32"
    epoch1 = np.concatenate([b[1] for b in batches])
    assert sorted(epoch1.tolist()) == sorted(labels)
    again = make_dataset(paths, labels, image_size=32, batch_size=4, shuffle=True, seed=1)
    assert np.concatenate([b[1] for b in again]).tolist() == epoch1.tolist()


def test_unshuffled_dataset_keeps_file_order_and_pixels(tmp_path: Path) -> None:
    write_split(tmp_path, {"cat": 1, "dog": 1})
    paths, labels = list_split_files(tmp_path, ["cat", "dog"])
    images, got = next(iter(make_dataset(paths, labels, 32, 8)))
    assert np.asarray(got).tolist() == [0, 1]
    # Raw RGB pixels, float32 in [0, 255]: the VGG16 preprocessing is the model's first layer, not the pipeline's.
    assert images.dtype.name == "float32"
    np.testing.assert_array_equal(np.asarray(images)[0, 0, 0], [250.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(images)[1, 0, 0], [0.0, 250.0, 0.0])
    # The one-image path (Inference) gives exactly what the training pipeline gives.
    one = load_image(Path(paths[1]).read_bytes(), 32)
    assert one.shape == (1, 32, 32, 3) and one.dtype == np.float32
    np.testing.assert_array_equal(one[0], np.asarray(images)[1])


def test_shuffled_batches_are_raw_pixels_in_range(tmp_path: Path) -> None:
    write_split(tmp_path, {"cat": 3, "dog": 3, "other": 3})
    paths, labels = list_split_files(tmp_path, ["cat", "dog", "other"])
    for images, _ in make_dataset(paths, labels, 24, 4, shuffle=True, seed=2):
        pixels = np.asarray(images)
        assert pixels.dtype == np.float32 and pixels.min() >= 0.0 and pixels.max() <= 255.0
        np.testing.assert_array_equal(pixels, np.round(pixels))  # cached as uint8, cast per batch


def test_load_image_rejects_garbage() -> None:
    with pytest.raises(DatasetError, match="cannot decode image"):
        load_image(b"not an image", 32)
