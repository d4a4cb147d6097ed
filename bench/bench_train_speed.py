"""Training throughput (images/s) of the frozen-VGG16 model on this machine's CPU, at image sizes 64 and 224.

    .venv/bin/python bench/bench_train_speed.py [--sizes 64,224] [--batch 32] [--demo-count 0]

Times `train_on_batch` on in-memory batches (no input pipeline: the model alone), after one warm-up step
that traces the graph. Weights are random ("none"): ImageNet weights cost exactly the same compute.
`--demo-count N` also runs the default demo configuration end to end (train() with the course defaults:
224x224, batch 64, 4 epochs, 0.8/0.1/0.1) on N synthetic images from a local folder, MLflow in a temporary
SQLite store, and prints its wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from kto_trainer.model import build_model
from trainer_bench_common import cpu_note

# Timed steps per size, so that each measurement lasts a few seconds at the expected speeds.
STEPS = {64: 8, 224: 3}


def images_per_second(image_size: int, batch: int, steps: int) -> float:
    model = build_model(3, image_size)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 60, size=(batch, image_size, image_size, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=batch)
    model.train_on_batch(x, y)  # trace + first-step allocations
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def demo_run(count: int) -> float:
    import mlflow
    from kto_trainer.config import TrainConfig
    from kto_trainer.datasets import synthetic_images, write_layout
    from kto_trainer.train import train

    root = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        write_layout(root / "data", synthetic_images(count, 224, seed=0))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        client = mlflow.MlflowClient()
        os.environ["MLFLOW_EXPERIMENT_ID"] = client.create_experiment("demo", artifact_location=str(root / "art"))
        os.environ.pop("MLFLOW_RUN_ID", None)
        config = TrainConfig(weights="none", working_dir=str(root / "work"), dataset_dir=str(root / "data"))
        start = time.perf_counter()
        metrics = train(config)
        elapsed = time.perf_counter() - start
        print(f"demo metrics: {', '.join(f'{k}={v:.3f}' for k, v in metrics.items())}")
        return elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--demo-count", type=int, default=0, help="also time the default demo config on N images")
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU {gpus[0].name}" if gpus else "CPU"
    print(f"TF {tf.__version__} on {device}; {cpu_note()}; batch {args.batch}")
    results: dict[int, float] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        results[size] = images_per_second(size, args.batch, STEPS.get(size, 3))
        print(f"image_size {size:4d}: {results[size]:7.1f} images/s (train step, frozen VGG16 + head)")
    if 64 in results and 224 in results:
        print(f"RATIO 64 vs 224: {results[64] / results[224]:.1f}x faster "
              f"(pixels ratio {(224 / 64) ** 2:.1f}x)")
    if 224 in results:
        n_train = 0.8 * 300
        per_epoch = n_train / results[224]
        print(f"estimate for the default config (224, 4 epochs) on 300 images: ~{4 * per_epoch:.0f} s of train steps")
    if args.demo_count:
        seconds = demo_run(args.demo_count)
        print(f"default demo configuration on {args.demo_count} images (224, batch 64, 4 epochs): {seconds:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
