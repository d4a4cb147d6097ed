"""`python -m kto_trainer` / `kto-train`: the course's MLproject flags plus image size, seed, bucket, weights.

Bad input ends with one `kto-train: error: ...` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import NoReturn

from .config import TrainConfig
from .errors import TrainerError
from .identity import ensure_user_name

PROG = "kto-train"
EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM

HELP = {
    "split_ratio_train": "share of each class used for training",
    "split_ratio_evaluate": "share of each class used for validation during training",
    "split_ratio_test": "share of each class held out for the final test",
    "batch_size": "images per training step over all workers (global batch: each of N workers takes "
                  "batch_size/N, which must be whole)",
    "epochs": "training epochs",
    "working_dir": "local folder for the dataset, model and plots",
    "model_filename": "saved model file name (.keras) under <working_dir>/model",
    "model_plot_filename": "history plot file name (.png) under <working_dir>/model",
    "image_size": "square input size in pixels (>= 32)",
    "seed": "seed of the split and of the weight initialisation",
    "bucket": "S3 bucket holding dataset/cats_dogs_others-annotations.json and dataset/extract/",
    "weights": "VGG16 base weights: none, imagenet (from --weights_file or the Keras cache), a path or s3://",
    "weights_file": "local path or s3://bucket/key of the VGG16 notop weights used by --weights imagenet",
    "dataset_dir": "read the course layout from this local folder instead of S3",
    "download_workers": "concurrent downloads",
    "mixed_precision": "true: float16 compute on a GPU (bfloat16 on CPUs), float32 weights and output",
}


def _optional_str(value: str) -> str | None:
    return value or None


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


CONVERTERS: dict[str, Callable[[str], object]] = {
    "float": float, "int": int, "str | None": _optional_str, "bool": _bool,
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description="Train the cats/dogs/other VGG16 classifier, tracked in MLflow.",
        epilog="Several workers (TensorFlow's MultiWorkerMirroredStrategy): TF_CONFIG, or KTO_WORKER_HOSTS "
               "(host:port,...) with JOB_COMPLETION_INDEX as the kto operator gives an Indexed Job's pods. "
               "batch_size stays global; worker 0 alone logs to MLflow and saves the model.",
    )
    defaults = TrainConfig.__dataclass_fields__
    for field in fields(TrainConfig):
        default = defaults[field.name].default
        kind = CONVERTERS.get(str(field.type), str)
        parser.add_argument(
            f"--{field.name}", type=kind, default=default, metavar=field.name.upper(),
            help=f"{HELP.get(field.name, '')} (default: {default})",
        )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Flags -> a validated TrainConfig (invalid values exit like argparse errors do)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return TrainConfig(**vars(args))
    except TrainerError as error:
        parser.error(str(error))


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    # MLflow's telemetry thread phones home at import (pods may have no internet) and, in MLflow 3.17,
    # can deadlock with autolog's import hook (seen on the bed: the trainer hung in mlflow.autolog()).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    ensure_user_name(os.environ)
    config = parse_config(argv)
    # Before TensorFlow is imported: keep its C++ start-up chatter out of the pod log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from . import termination
    from .tracking import Terminated
    from .train import train

    previous = termination.install()
    try:
        metrics = train(config)
    except TrainerError as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        termination.restore(previous)
    print(" ".join(f"{key}={value:.4f}" for key, value in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
