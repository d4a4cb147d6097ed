"""Input throughput on the same image files: kto_trainer's tf.data pipeline vs the course's ImageDataGenerator.

    .venv/bin/python bench/bench_input_pipeline.py [--count 1000] [--source-size 128] [--image-size 224]
        [--json out.json]

Writes `count` PNG images (3 classes) to a temporary folder, then reads every one of them into model-ready
batches of 64 for the respective model, with:
  1. the course's legacy `tf.keras.preprocessing.image.ImageDataGenerator(featurewise_center=True)` +
     `flow_from_directory` (PIL decode + resize one image at a time in Python, float32, minus the ImageNet
     mean [123.68, 116.779, 103.939] in RGB order, the course's model input), one epoch;
  2. kto_trainer.data.make_dataset (tf.data: parallel decode/resize, uint8 cache, shuffle, batch, cast to
     float32, prefetch): raw RGB pixels [0, 255], kto_trainer's model input (its first layer does the VGG16
     preprocessing); the first epoch (decoding) and the next ones (served from the cache), as `fit` sees them;
  3. for strictly equal work, the cached tf.data epochs again with kto_trainer's preprocessing layer
     (`model.vgg16_preprocess_layer`, RGB->BGR minus the ImageNet mean) run on every batch, in a tf.function,
     as it runs inside the model's train step.
No model runs: this is the input pipeline alone. Ratios come from the measurements of this one run; the
target (bench/targets.toml) is on the average over `--epochs` epochs, as `fit` sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf
from kto_trainer.data import list_split_files, make_dataset
from kto_trainer.datasets import CLASSES, synthetic_images
from kto_trainer.model import vgg16_preprocess_layer
from trainer_bench_common import cpu_note, timer

BATCH = 64


def write_images(root: Path, count: int, size: int) -> None:
    for name, (label, body) in synthetic_images(count, size, seed=0).items():
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / name).write_bytes(body)


def generator_epoch(root: Path, image_size: int) -> int:
    """The course's train_and_evaluate.py input, with its ImageNet mean centring."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datagen = tf.keras.preprocessing.image.ImageDataGenerator(featurewise_center=True)
        datagen.mean = [123.68, 116.779, 103.939]
        iterator = datagen.flow_from_directory(
            str(root), class_mode="binary", batch_size=BATCH, target_size=(image_size, image_size)
        )
        seen = 0
        for _ in range(len(iterator)):
            images, _ = next(iterator)
            seen += len(images)
    return seen


def dataset_epoch(dataset: tf.data.Dataset, preprocess: Callable[[tf.Tensor], tf.Tensor] | None = None) -> int:
    seen = 0
    for images, _ in dataset:
        if preprocess is not None:
            # On the CPU an eager call returns when its result is computed; .numpy() would add a copy of it.
            images = preprocess(images)
        seen += int(images.shape[0])
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--source-size", type=int, default=128, help="side of the PNG files on disk")
    parser.add_argument("--image-size", type=int, default=224, help="target size (the course's 224)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs averaged for the fit-like figure")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-input-"))
    try:
        write_images(root, args.count, args.source_size)
        print(f"{args.count} PNG files of {args.source_size}x{args.source_size} -> {args.image_size}x"
              f"{args.image_size}, batches of {BATCH}; TF {tf.__version__}; {cpu_note()}")
        paths, labels = list_split_files(root, CLASSES)

        # The legacy epoch is timed before and after the tf.data epochs: on a shared machine the load
        # drifts, and averaging the two brackets the tf.data measurements.
        legacy_times = []
        with timer() as elapsed:
            assert generator_epoch(root, args.image_size) == args.count
        legacy_times.append(elapsed())

        dataset = make_dataset(paths, labels, args.image_size, BATCH, shuffle=True, seed=0)
        epoch_times = []
        for _ in range(args.epochs):
            with timer() as elapsed:
                assert dataset_epoch(dataset) == args.count
            epoch_times.append(elapsed())

        layer = vgg16_preprocess_layer()
        preprocess = tf.function(lambda images: layer(images))
        with_layer_times = []
        for _ in range(max(1, args.epochs - 1)):
            with timer() as elapsed:
                assert dataset_epoch(dataset, preprocess) == args.count
            with_layer_times.append(elapsed())

        with timer() as elapsed:
            assert generator_epoch(root, args.image_size) == args.count
        legacy_times.append(elapsed())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    legacy = sum(legacy_times) / len(legacy_times)
    print(f"ImageDataGenerator epochs: {legacy_times[0]:.2f} s before, {legacy_times[1]:.2f} s after")
    first, later = epoch_times[0], sum(epoch_times[1:]) / max(1, len(epoch_times) - 1)
    average = sum(epoch_times) / len(epoch_times)
    with_layer = sum(with_layer_times) / len(with_layer_times)
    rows = [
        ("ImageDataGenerator, one epoch (mean)", legacy),
        ("tf.data, first epoch (decode + cache)", first),
        ("tf.data, later epochs (from cache)", later),
        (f"tf.data, average over {args.epochs} epochs", average),
        ("tf.data cached + preprocess layer per batch", with_layer),
    ]
    print(f"{'pipeline':42s} {'s/epoch':>8s} {'images/s':>9s} {'vs legacy':>9s}")
    for label, seconds in rows:
        print(f"{label:42s} {seconds:8.2f} {args.count / seconds:9.0f} {legacy / seconds:8.1f}x")
    print(f"RATIO tf.data vs ImageDataGenerator: first epoch {legacy / first:.1f}x, cached epochs "
          f"{legacy / later:.1f}x, {args.epochs}-epoch average {legacy / average:.1f}x (target >= 4x); "
          f"cached epochs with the model's preprocessing layer run on each batch {legacy / with_layer:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "count": args.count, "source_size": args.source_size, "image_size": args.image_size,
            "epochs": args.epochs, "legacy_runs_s": [round(x, 3) for x in legacy_times],
            "seconds": {"legacy": round(legacy, 3), "first": round(first, 3), "later": round(later, 3),
                        "average": round(average, 3), "with_layer": round(with_layer, 3)},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
