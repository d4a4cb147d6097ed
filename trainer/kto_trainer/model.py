"""Step 3: VGG16 preprocessing layer + VGG16 base (frozen) + Dropout/Flatten/Dense(64)/Dense(n, softmax) head.

The model takes raw RGB pixels in [0, 255]: its first layer does what keras.applications.vgg16.preprocess_input
does (RGB -> BGR, minus the ImageNet mean), so a saved or MLflow-logged model needs no preprocessing code.

The course put a sigmoid output under `SparseCategoricalCrossentropy(from_logits=True)`: the loss then
re-applied a softmax to probabilities. Here the output is a softmax and the loss takes probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from .config import WEIGHTS_IMAGENET, WEIGHTS_NONE
from .errors import ConfigError
from .s3io import ObjectStore, parse_s3_url

# The file Keras itself would download for VGG16(include_top=False, weights="imagenet").
IMAGENET_NOTOP_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
# VGG16 "caffe" preprocessing: RGB -> BGR, minus the ImageNet mean of each BGR channel, no scaling.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESS_LAYER_NAME = "vgg16_preprocess"


def keras_cache_weights() -> Path:
    keras_home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(keras_home) / "models" / IMAGENET_NOTOP_FILENAME


def resolve_weights(
    weights: str,
    weights_file: str | None,
    download_dir: Path,
    open_store: Callable[[str], ObjectStore],
) -> Path | None:
    """Where to load the VGG16 base weights from; None for random weights. Never downloads from the internet.

    `weights` is "none", "imagenet" (then `weights_file`, else the local Keras cache) or directly a file
    path or an s3:// URL. `open_store(bucket)` gives the store used for s3:// URLs.
    """
    if weights.lower() == WEIGHTS_NONE:
        return None
    source: str | None = weights
    if weights.lower() == WEIGHTS_IMAGENET:
        source = weights_file
        if not source:
            cached = keras_cache_weights()
            if cached.is_file():
                return cached
            raise ConfigError(
                "weights 'imagenet' need a local copy of the VGG16 notop weights (pods may have no internet): "
                f"pass --weights_file PATH or s3://bucket/key ({IMAGENET_NOTOP_FILENAME}), or --weights none"
            )
    assert source is not None
    if source.startswith("s3://"):
        bucket, key = parse_s3_url(source)
        local = download_dir / Path(key).name
        if not local.is_file():
            open_store(bucket).download(key, local)
        return local
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    return path


def vgg16_preprocess_layer(name: str = PREPROCESS_LAYER_NAME) -> keras.layers.Dense:
    """A frozen Dense(3) on the channel axis equal to vgg16.preprocess_input, per pixel.

    kernel[i, j] = 1 where output channel j (B, G, R) is input channel i (R, G, B); bias = -mean. A built-in
    layer (not a Lambda or a custom class) so the model saves and loads with safe_mode and without our code.
    """
    layer = keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="zeros", trainable=False, name=name)
    layer.build((None, 3))
    rgb_to_bgr = np.ascontiguousarray(np.eye(3, dtype=np.float32)[::-1])
    layer.set_weights([rgb_to_bgr, -np.asarray(IMAGENET_BGR_MEAN, dtype=np.float32)])
    return layer


def _frozen_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, frozen layer with `layer`'s config; its weights are set from `layer` once it is built.

    Constant initializers: a random one would draw from the seeded random state for values overwritten at
    once, and shift the head's seeded initial weights and dropout masks (training would differ from a model
    built without the preprocessing layer).
    """
    config = layer.get_config()
    for key in ("kernel_initializer", "bias_initializer"):
        if key in config:
            config[key] = "zeros"
    config["trainable"] = False
    return type(layer).from_config(config)


def build_model(
    n_classes: int, image_size: int, weights_path: Path | None = None, learning_rate: float = 1e-3
) -> keras.Model:
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")
    try:
        base = keras.applications.VGG16(
            include_top=False,
            weights=None if weights_path is None else str(weights_path),
            input_shape=(image_size, image_size, 3),
        )
    except (ValueError, OSError) as error:
        raise ConfigError(f"cannot load VGG16 weights from {weights_path}: {error}") from None
    inputs = keras.Input(shape=(image_size, image_size, 3), name="rgb_pixels")
    features = vgg16_preprocess_layer()(inputs)
    # VGG16 is a plain chain: a fresh copy of each of its layers (same name, config and loaded weights) is
    # applied after the preprocessing layer, so the model stays flat (block1_conv1 ... block5_pool at the top
    # level, as before) and each layer has this one graph (`layer.output` is this model's tensor).
    for layer in base.layers[1:]:
        copy = _frozen_copy(layer)
        features = copy(features)
        copy.set_weights(layer.get_weights())
    features = keras.layers.Dropout(0.2)(features)
    features = keras.layers.Flatten()(features)
    features = keras.layers.Dense(64, activation="relu", kernel_initializer="he_uniform")(features)
    # float32 output under a mixed-precision policy too: a float16 softmax saturates and its loss overflows.
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities", dtype="float32")(features)
    model = keras.Model(inputs=inputs, outputs=probabilities, name="vgg16_transfer")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, name="adam"),  # stable param name
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        metrics=["accuracy"],
    )
    return model
