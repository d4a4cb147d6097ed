"""Step 3b: the tf.data input pipeline (list files, decode, resize, cache, shuffle, batch, prefetch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from .errors import DatasetError

# VGG16 "caffe" preprocessing: RGB -> BGR, minus the ImageNet mean of each BGR channel, no scaling.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
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


def to_bgr(images: tf.Tensor) -> tf.Tensor:
    return tf.reverse(images, axis=[-1])


def center_bgr(images: tf.Tensor) -> tf.Tensor:
    """uint8 BGR -> float32 minus the ImageNet mean. bias_add: the fast path for a per-channel offset."""
    return tf.nn.bias_add(tf.cast(images, tf.float32), -tf.constant(IMAGENET_BGR_MEAN, dtype=tf.float32))


def vgg16_preprocess(images: tf.Tensor) -> tf.Tensor:
    """Same as keras.applications.vgg16.preprocess_input, on uint8 RGB tensors of any leading shape."""
    return center_bgr(to_bgr(images))


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    files = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, dtype=np.int32)))
    # Everything that does not change between epochs (decode, resize, RGB->BGR) runs once, per image, in
    # parallel, and is cached as uint8 (a quarter of float32's memory); each epoch then only shuffles,
    # batches and centres whole batches.
    dataset = files.map(
        lambda path, label: (to_bgr(decode_resize(tf.io.read_file(path), image_size)), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if cache:
        dataset = dataset.cache()
    if shuffle:
        buffer = min(len(paths), SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda images, label: (center_bgr(images), label), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def split_dataset(
    split_dir: Path, classes: Sequence[str], image_size: int, batch_size: int, *, shuffle: bool, seed: int
) -> tuple[tf.data.Dataset, int]:
    """The dataset of one split folder and its number of images."""
    paths, labels = list_split_files(split_dir, classes)
    dataset = make_dataset(paths, labels, image_size, batch_size, shuffle=shuffle, seed=seed)
    return dataset, len(paths)


def load_image(contents: bytes, image_size: int) -> np.ndarray:
    """One encoded image -> a preprocessed batch of one, exactly as the training pipeline does it."""
    try:
        image = decode_resize(tf.constant(contents), image_size)
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise DatasetError(f"cannot decode image: {error.__class__.__name__}") from None
    return np.asarray(vgg16_preprocess(image[tf.newaxis, ...]))
