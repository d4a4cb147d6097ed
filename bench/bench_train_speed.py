"""Training speed of the frozen-VGG16 model on this machine's CPU at 64 and 224 px: the trainer's `fit` (its
tf.data pipeline reading PNG files) against a bare Keras `fit` on the same images held in memory.

    .venv/bin/python bench/bench_train_speed.py [--sizes 64,224] [--batch 32] [--pairs 4] [--json out.json]

Per size: `count` PNG images (3 classes) written to a temporary folder and one model
(`kto_trainer.model.build_model`, weights "none": ImageNet weights cost exactly the same compute) trained
one epoch at a time, in batches of `--batch`, alternately on
  - bare: `model.fit(x, y)` on the decoded images as in-memory arrays (the model's own limit on this CPU);
  - trainer: `model.fit(dataset)` with `kto_trainer.data.split_dataset` on the files, as train() runs it.
One untimed epoch of each first (it traces the train step for each input, and the trainer's decodes the
files and fills its cache: `first_epoch_s`), then `--pairs` pairs of epochs, bare and trainer side by side
in time, the order swapped from one pair to the next: on a shared machine the load drifts by the minute,
and epochs seconds apart see the same load (separate fits a minute apart once differed by 2x). Images/s
= images x epochs / the epochs' time (Keras' own epoch boundaries). Target (bench/targets.toml): trainer ÷
bare >= 0.9, i.e. the input pipeline is not what slows training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from kto_trainer.data import split_dataset
from kto_trainer.datasets import CLASSES, synthetic_images
from kto_trainer.model import build_model
from trainer_bench_common import cpu_note

# Images per size: each timed epoch lasts a few seconds at the expected speeds (~95 and ~9 images/s).
COUNTS = {64: 256, 224: 64}


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def one_epoch(model: keras.Model, timer: EpochTimer, data: Any, batch: int, labels: np.ndarray | None) -> float:
    """One epoch of `model` on `data` (arrays with `labels`, or a dataset); its seconds."""
    if labels is None:
        model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    else:
        model.fit(data, labels, batch_size=batch, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    return timer.seconds[-1]


def measure(size: int, count: int, batch: int, pairs: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        for name, (label, body) in synthetic_images(count, size, seed=0).items():  # the trainer's split layout
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / name).write_bytes(body)
        dataset, n = split_dataset(root, CLASSES, size, batch, shuffle=True, seed=0)
        # The same decoded pixels as arrays: one pass of the pipeline without shuffling.
        plain, _ = split_dataset(root, CLASSES, size, count, shuffle=False, seed=0)
        x, y = (np.asarray(t) for t in next(iter(plain)))
        keras.utils.set_random_seed(0)
        model, timer = build_model(len(CLASSES), size), EpochTimer()
        first = {"bare": one_epoch(model, timer, x, batch, y), "trainer": one_epoch(model, timer, dataset, batch, None)}
        epochs: dict[str, list[float]] = {"bare": [], "trainer": []}
        for i in range(pairs):
            for kind in (("bare", "trainer") if i % 2 == 0 else ("trainer", "bare")):
                data, labels = (x, y) if kind == "bare" else (dataset, None)
                epochs[kind].append(one_epoch(model, timer, data, batch, labels))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def rate(times: list[float]) -> float:
        return n * len(times) / sum(times)

    return {"images": n, "epochs": pairs, "batch": batch,
            "fit_img_s": round(rate(epochs["trainer"]), 2), "bare_img_s": round(rate(epochs["bare"]), 2),
            "first_epoch_s": {k: round(v, 2) for k, v in first.items()},
            "epoch_s": {k: [round(t, 3) for t in v] for k, v in epochs.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=4, help="timed epochs of each kind, side by side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU {gpus[0].name}" if gpus else "CPU"
    print(f"TF {tf.__version__} on {device}; {cpu_note()}; batch {args.batch}", flush=True)
    sizes: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, COUNTS.get(size, 64), args.batch, args.pairs)
        sizes[str(size)] = r
        print(f"image_size {size:4d}: trainer's fit {r['fit_img_s']:7.1f} images/s, bare fit {r['bare_img_s']:7.1f} "
              f"images/s (epochs: trainer {r['epoch_s']['trainer']} s, bare {r['epoch_s']['bare']} s): ratio "
              f"{r['fit_img_s'] / r['bare_img_s']:.2f} (target >= 0.9); first epoch "
              f"{r['first_epoch_s']['trainer']} s vs {r['first_epoch_s']['bare']} s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "sizes": sizes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
