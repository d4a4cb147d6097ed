"""Datasets in the course layout: synthetic 3-class images, or scikit-learn's digits standing for 3 classes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .annotations import build_annotations
from .config import ANNOTATION_KEY, EXTRACT_PREFIX
from .errors import ConfigError

CLASSES = ("cat", "dog", "other")
DEFAULT_DIGITS = (0, 1, 2)
# (label, PNG bytes) per file name.
Images = dict[str, tuple[str, bytes]]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _balanced_labels(count: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.arange(count) % n_classes
    rng.shuffle(labels)
    return labels


def synthetic_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """cat: reddish disc, dog: greenish square, other: bluish triangle; noisy background, random place."""
    background = rng.integers(60, 200)
    pixels = np.full((size, size, 3), background, dtype=np.float64)
    image = Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.35, 0.7) * size
    x0, y0 = rng.uniform(0, size - extent, size=2)
    x1, y1 = x0 + extent, y0 + extent
    base = np.zeros(3)
    base[label] = 220
    colour = tuple(int(c) for c in np.clip(base + rng.integers(0, 50, size=3), 0, 255))
    if label == 0:
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif label == 1:
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon(((x0 + extent / 2, y0), (x1, y1), (x0, y1)), fill=colour)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(noisy, 0, 255)


def synthetic_images(count: int, size: int, seed: int = 0) -> Images:
    if count < len(CLASSES):
        raise ConfigError(f"count must be >= {len(CLASSES)}, got {count}")
    if size < 8:
        raise ConfigError(f"size must be >= 8, got {size}")
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(count, len(CLASSES), rng)
    return {
        f"synthetic-{index:05d}.png": (CLASSES[label], _png(synthetic_image(int(label), size, rng)))
        for index, label in enumerate(labels)
    }


def digits_images(count: int, size: int, seed: int = 0, digits: Sequence[int] = DEFAULT_DIGITS) -> Images:
    """scikit-learn's 8x8 digits (shipped inside the package: nothing is downloaded), upscaled to PNG."""
    from sklearn.datasets import load_digits  # optional dependency: kto-trainer[datasets]

    if len(digits) != len(CLASSES) or len(set(digits)) != len(CLASSES):
        raise ConfigError(f"give {len(CLASSES)} distinct digits (for {', '.join(CLASSES)}), got {list(digits)}")
    bunch = load_digits()
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(bunch.target == digit)) for digit in digits]
    available = min(len(pool) for pool in pools) * len(CLASSES)
    if not len(CLASSES) <= count <= available:
        raise ConfigError(f"count must be between {len(CLASSES)} and {available} for digits, got {count}")
    if size < 8:
        raise ConfigError(f"size must be >= 8, got {size}")
    labels = _balanced_labels(count, len(CLASSES), rng)
    taken = [0] * len(CLASSES)
    images: Images = {}
    for index, label in enumerate(labels):
        sample = pools[label][taken[label]]
        taken[label] += 1
        grey = Image.fromarray((bunch.images[sample] * (255.0 / 16.0)).astype(np.uint8), mode="L")
        rgb = np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR).convert("RGB"))
        images[f"digits-{index:05d}.png"] = (CLASSES[label], _png(rgb))
    return images


def layout_objects(images: Mapping[str, tuple[str, bytes]]) -> dict[str, bytes]:
    """The course's S3 keys: the annotation file and `dataset/extract/<fileName>`."""
    objects = {ANNOTATION_KEY: build_annotations({name: label for name, (label, _) in images.items()})}
    objects.update({EXTRACT_PREFIX + name: body for name, (_, body) in images.items()})
    return objects


def write_layout(root: Path, images: Mapping[str, tuple[str, bytes]]) -> int:
    """Write the course layout under a local folder (the trainer's `--dataset_dir`)."""
    objects = layout_objects(images)
    for key, body in objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return len(objects)
