from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from kto_trainer.errors import ConfigError
from kto_trainer.model import IMAGENET_NOTOP_FILENAME, build_model, resolve_weights
from kto_trainer.s3io import DirStore


def test_head_softmax_and_frozen_base() -> None:
    model = build_model(3, 32)
    assert model.output_shape == (None, 3)
    assert model.layers[-1].activation is keras.activations.softmax
    assert [type(layer).__name__ for layer in model.layers[-4:]] == ["Dropout", "Flatten", "Dense", "Dense"]
    assert model.layers[-2].units == 64
    # Only the head trains: two Dense layers, kernel + bias each.
    assert len(model.trainable_weights) == 4
    assert all(not layer.trainable for layer in model.layers if layer.name.startswith("block"))
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"] is False
    probabilities = model.predict_on_batch(np.zeros((2, 32, 32, 3), dtype=np.float32))
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)


def test_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model(1, 32)


def test_weights_are_loaded_from_a_file(tmp_path: Path) -> None:
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(path)
    model = build_model(2, 32, weights_path=path)
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], base.layers[1].get_weights()[0])


def test_broken_weights_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.weights.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="cannot load VGG16 weights"):
        build_model(2, 32, weights_path=path)


def no_store(bucket: str) -> DirStore:
    raise AssertionError(f"no store expected, asked for {bucket}")


def test_resolve_none_and_local_paths(tmp_path: Path) -> None:
    assert resolve_weights("none", None, tmp_path, no_store) is None
    local = tmp_path / "w.h5"
    local.write_bytes(b"w")
    assert resolve_weights(str(local), None, tmp_path, no_store) == local
    assert resolve_weights("imagenet", str(local), tmp_path, no_store) == local
    with pytest.raises(ConfigError, match="weights file not found"):
        resolve_weights(str(tmp_path / "missing.h5"), None, tmp_path, no_store)


def test_imagenet_is_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(ConfigError, match="--weights_file"):
        resolve_weights("imagenet", None, tmp_path, no_store)
    cached = tmp_path / "keras" / "models" / IMAGENET_NOTOP_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"w")
    assert resolve_weights("imagenet", None, tmp_path, no_store) == cached


def test_weights_from_s3_url(tmp_path: Path) -> None:
    (tmp_path / "bucket/models").mkdir(parents=True)
    (tmp_path / "bucket/models/vgg.h5").write_bytes(b"weights")
    asked: list[str] = []

    def store(bucket: str) -> DirStore:
        asked.append(bucket)
        return DirStore(tmp_path / bucket)

    got = resolve_weights("imagenet", "s3://bucket/models/vgg.h5", tmp_path / "dl", store)
    assert got == tmp_path / "dl/vgg.h5" and got.read_bytes() == b"weights" and asked == ["bucket"]
