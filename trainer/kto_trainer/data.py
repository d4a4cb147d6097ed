"""Step 3b: the tf.data input pipeline (list files, decode, resize, cache, shuffle, batch, prefetch).

It yields raw RGB pixels, float32 in [0, 255]: the VGG16 preprocessing (RGB -> BGR, minus the ImageNet mean)
is the model's first layer (`model.vgg16_preprocess_layer`), so a saved model takes the same raw pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from .errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
SHUFFLE_BUFFER = 4096


def list_split_files(split_dir: Path, classes: Sequence[str]) -> tuple[list[str], list[int]]:
    """Files under `split_dir/<class>/`, with the index of their class in `classes`; sorted, stable."""
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                paths.append(str(path))
                labels.append(index)
    if not paths:
        raise DatasetError(f"no image under {split_dir} for classes {', '.join(classes)}")
    return paths, labels


def decode_resize(contents: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded PNG/JPEG/BMP/GIF bytes -> uint8 (image_size, image_size, 3)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image = tf.image.resize(image, (image_size, image_size))
    # uint8 keeps the cache four times smaller than float32.
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def to_float(images: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
    return (tf.cast(images, tf.float32), *rest)


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
    weights: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """(images, labels) batches; (images, labels, weights) when `weights` are given (one per path)."""
    columns: tuple[object, ...] = (list(paths), np.asarray(labels, dtype=np.int32))
    if weights is not None:
        columns += (np.asarray(weights, dtype=np.float32),)
    files = tf.data.Dataset.from_tensor_slices(columns)
    # Decode and resize run once per image, in parallel, and are cached as uint8 raw pixels (a quarter of
    # float32's memory); each epoch then only shuffles, batches and casts whole batches to float32.
    dataset = files.map(
        lambda path, *rest: (decode_resize(tf.io.read_file(path), image_size), *rest),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if cache:
        dataset = dataset.cache()
    if shuffle:
        buffer = min(len(paths), SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_dataset(
    split_dir: Path, classes: Sequence[str], image_size: int, batch_size: int, *, shuffle: bool, seed: int
) -> tuple[tf.data.Dataset, int]:
    """The dataset of one split folder and its number of images."""
    paths, labels = list_split_files(split_dir, classes)
    dataset = make_dataset(paths, labels, image_size, batch_size, shuffle=shuffle, seed=seed)
    return dataset, len(paths)


def load_image(contents: bytes, image_size: int) -> np.ndarray:
    """One encoded image -> a float32 batch of one of raw RGB pixels, exactly as the training pipeline gives."""
    try:
        image = decode_resize(tf.constant(contents), image_size)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise DatasetError(f"cannot decode image: {error.__class__.__name__}") from None
    return np.asarray(tf.cast(image[tf.newaxis, ...], tf.float32))
