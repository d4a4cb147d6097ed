"""Training speed of the frozen-VGG16 model on this machine's CPU at 64 and 224 px: the trainer's `fit` (its
tf.data pipeline reading PNG files) against a bare Keras `fit` on the same images held in memory.

    .venv/bin/python bench/bench_train_speed.py [--sizes 64,224] [--batch 32] [--epochs 3] [--json out.json]

Per size: `count` PNG images (3 classes) written to a temporary folder, then fits of a fresh model
(`kto_trainer.model.build_model`, weights "none": ImageNet weights cost exactly the same compute), each
`--epochs` epochs of the same images in batches of `--batch`, alternating `--rounds` times
  - bare: `model.fit(x, y)` on the decoded images as in-memory arrays (the model's own limit on this CPU);
  - trainer: `model.fit(dataset)` with `kto_trainer.data.split_dataset` on the files, as train() runs it;
and a last bare fit (the load drifts on a shared machine: the bare fits bracket the trainer's; each kind's
figure is the mean of its fits).
Images/s count the epochs after the first (the first traces the graph, and the trainer's also decodes and
fills its cache: `first_epoch_s` is reported apart). Target (bench/targets.toml): trainer ÷ bare >= 0.9,
i.e. the input pipeline is not what slows training.
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


def timed_fit(size: int, data: Any, epochs: int, batch: int, labels: np.ndarray | None = None) -> list[float]:
    """Epoch times of a fresh, equally seeded model fitted on `data` (arrays with `labels`, or a dataset)."""
    keras.utils.set_random_seed(0)
    model = build_model(len(CLASSES), size)
    timer = EpochTimer()
    if labels is None:
        model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[timer])
    else:
        model.fit(data, labels, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    return timer.seconds


def measure(size: int, count: int, batch: int, epochs: int, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        for name, (label, body) in synthetic_images(count, size, seed=0).items():  # the trainer's split layout
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / name).write_bytes(body)
        dataset, n = split_dataset(root, CLASSES, size, batch, shuffle=True, seed=0)
        # The same decoded pixels as arrays: one pass of the pipeline without shuffling.
        plain, _ = split_dataset(root, CLASSES, size, count, shuffle=False, seed=0)
        x, y = (np.asarray(t) for t in next(iter(plain)))
        bare: list[list[float]] = []
        trainer: list[list[float]] = []
        for _ in range(rounds):
            bare.append(timed_fit(size, x, epochs, batch, y))
            trainer.append(timed_fit(size, dataset, epochs, batch))
        bare.append(timed_fit(size, x, epochs, batch, y))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def rate(times: list[float]) -> float:
        return n * (len(times) - 1) / sum(times[1:])

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {"images": n, "epochs": epochs, "batch": batch, "rounds": rounds,
            "fit_img_s": round(mean([rate(t) for t in trainer]), 2),
            "bare_img_s": round(mean([rate(t) for t in bare]), 2),
            "fit_runs_img_s": [round(rate(t), 2) for t in trainer],
            "bare_runs_img_s": [round(rate(t), 2) for t in bare],
            "first_epoch_s": {"trainer": round(mean([t[0] for t in trainer]), 2),
                              "bare": round(mean([t[0] for t in bare]), 2)},
            "epoch_s": {"trainer": [[round(e, 3) for e in t] for t in trainer],
                        "bare": [[round(e, 3) for e in t] for t in bare]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="per fit; the first is not timed")
    parser.add_argument("--rounds", type=int, default=2, help="bare + trainer fits, then one more bare fit")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU {gpus[0].name}" if gpus else "CPU"
    print(f"TF {tf.__version__} on {device}; {cpu_note()}; batch {args.batch}", flush=True)
    sizes: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, COUNTS.get(size, 64), args.batch, args.epochs, args.rounds)
        sizes[str(size)] = r
        print(f"image_size {size:4d}: trainer's fit {r['fit_img_s']:7.1f} images/s, bare fit {r['bare_img_s']:7.1f} "
              f"images/s (fits: trainer {r['fit_runs_img_s']}, bare {r['bare_runs_img_s']}): ratio "
              f"{r['fit_img_s'] / r['bare_img_s']:.2f} (target >= 0.9); first epoch "
              f"{r['first_epoch_s']['trainer']} s vs {r['first_epoch_s']['bare']} s",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "sizes": sizes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
