from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from kto_trainer.errors import ConfigError
from kto_trainer.model import (
    IMAGENET_NOTOP_FILENAME,
    PREPROCESS_LAYER_NAME,
    build_model,
    resolve_weights,
    vgg16_preprocess_layer,
)
from kto_trainer.s3io import DirStore


def test_head_softmax_and_frozen_base() -> None:
    model = build_model(3, 32)
    assert model.output_shape == (None, 3)
    assert model.layers[-1].activation is keras.activations.softmax
    assert [type(layer).__name__ for layer in model.layers[-4:]] == ["Dropout", "Flatten", "Dense", "Dense"]
    assert model.layers[-2].units == 64
    # Only the head trains: two Dense layers, kernel + bias each (the preprocessing Dense is frozen).
    assert len(model.trainable_weights) == 4
    assert all(not layer.trainable for layer in model.layers if layer.name.startswith("block"))
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"] is False
    probabilities = model.predict_on_batch(np.zeros((2, 32, 32, 3), dtype=np.float32))
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)


def random_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Raw RGB pixels, float32 in [0, 255], not only integers."""
    return np.random.default_rng(seed).uniform(0.0, 255.0, size=shape).astype(np.float32)


def test_preprocess_layer_matches_keras_vgg16_preprocess_input() -> None:
    images = random_pixels((4, 16, 16, 3))
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    got = np.asarray(vgg16_preprocess_layer()(images))
    assert got.shape == images.shape
    assert np.max(np.abs(got - expected)) < 1e-3


def test_model_starts_with_the_frozen_preprocess_layer() -> None:
    model = build_model(3, 32)
    layer = model.layers[1]
    assert layer.name == PREPROCESS_LAYER_NAME and type(layer) is keras.layers.Dense
    assert not layer.trainable and layer.units == 3
    assert model.layers[2].name == "block1_conv1"
    assert model.input_shape == (None, 32, 32, 3)
    images = random_pixels((2, 32, 32, 3), seed=1)
    preprocessed = keras.Model(model.inputs, layer.output)
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    assert np.max(np.abs(np.asarray(preprocessed.predict_on_batch(images)) - expected)) < 1e-3


def test_model_on_raw_pixels_equals_vgg16_on_preprocessed_pixels(tmp_path: Path) -> None:
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(path)
    model = build_model(2, 32, weights_path=path)
    features = keras.Model(model.inputs, model.get_layer("block5_pool").output)
    images = random_pixels((2, 32, 32, 3), seed=2)
    expected = base.predict_on_batch(keras.applications.vgg16.preprocess_input(images.copy()))
    np.testing.assert_allclose(features.predict_on_batch(images), expected, rtol=1e-4, atol=1e-4)


def test_preprocess_layer_leaves_the_seeded_initial_head_unchanged() -> None:
    # The same seed gives the same head as VGG16 + head without the preprocessing layer (its layer copies
    # draw nothing from the seeded random state), so seeded training results do not move with it.
    keras.utils.set_random_seed(7)
    model = build_model(3, 32)
    keras.utils.set_random_seed(7)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    keras.layers.Dropout(0.2)
    hidden = keras.layers.Dense(64, activation="relu", kernel_initializer="he_uniform")
    hidden.build((None, 512))
    output = keras.layers.Dense(3, activation="softmax")
    output.build((None, 64))
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], base.layers[1].get_weights()[0])
    np.testing.assert_array_equal(model.layers[-2].get_weights()[0], hidden.get_weights()[0])
    np.testing.assert_array_equal(model.layers[-1].get_weights()[0], output.get_weights()[0])


def test_saved_model_loads_in_safe_mode_with_builtin_layers_only(tmp_path: Path) -> None:
    model = build_model(3, 32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True by default: refuses Lambda layers
    assert {type(layer).__module__.split(".")[0] for layer in loaded.layers} == {"keras"}
    assert not any(type(layer).__name__ == "Lambda" for layer in loaded.layers)
    layer = loaded.get_layer(PREPROCESS_LAYER_NAME)
    assert not layer.trainable and len(loaded.trainable_weights) == 4
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(kernel, np.eye(3)[::-1])
    np.testing.assert_allclose(bias, [-103.939, -116.779, -123.68], rtol=1e-7)
    images = random_pixels((2, 32, 32, 3), seed=3)
    np.testing.assert_allclose(loaded.predict_on_batch(images), model.predict_on_batch(images), rtol=1e-5)


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
