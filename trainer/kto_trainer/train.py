"""`train(config)`: the course's pipeline end to end, tracked in MLflow."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import mlflow
import numpy as np

from . import termination, tracking
from .annotations import dataset_fingerprint, parse_annotations
from .config import ANNOTATION_KEY, TrainConfig
from .data import split_dataset
from .evaluate import confusion_matrix, evaluate_model, predict_labels
from .inference import write_classes
from .model import build_model, resolve_weights
from .plots import plot_confusion_matrix, plot_history
from .s3io import DirStore, ObjectStore, S3Store, download_extract, make_client
from .split import Split, split_extract

ANNOTATION_FILENAME = "cats_dogs_others-annotations.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def log(message: str) -> None:
    # Progress on stdout with Keras' epoch lines; stderr is kept for the one-line error.
    print(f"kto-train: {message}", flush=True)


def default_store_opener(config: TrainConfig) -> Callable[[str], ObjectStore]:
    """bucket -> store; S3 (settings read now, from the environment) unless `dataset_dir` is set."""
    if config.dataset_dir:
        root = Path(config.dataset_dir)
        return lambda bucket: DirStore(root)
    client = make_client(max_connections=max(10, config.download_workers))
    return lambda bucket: S3Store(client, bucket)


def fetch_dataset(config: TrainConfig, store: ObjectStore) -> tuple[list[str], Split]:
    """Steps 1-2: annotations -> extract/classes -> split -> images in `<working_dir>/<split>/<label>/`."""
    annotation_bytes = store.read(ANNOTATION_KEY)
    (config.work_path / ANNOTATION_FILENAME).write_bytes(annotation_bytes)
    extract, classes = parse_annotations(annotation_bytes, source=store.url(ANNOTATION_KEY))
    mlflow.log_dict(extract, "annotations/extract.json")
    mlflow.set_tags(
        {
            "dataset.fingerprint": dataset_fingerprint(annotation_bytes, config.seed),
            "dataset.source": store.url(ANNOTATION_KEY),
            "dataset.images": str(len(extract)),
            "dataset.classes": ",".join(classes),
        }
    )
    log(f"{len(extract)} images, classes {', '.join(classes)} ({store.url(ANNOTATION_KEY)})")
    split = split_extract(extract, classes, config.ratios, config.seed)
    started = time.monotonic()
    for name, part in split.items():
        split_dir = config.split_dir(name)
        # Leftovers of an earlier run with another split would leak into this one.
        shutil.rmtree(split_dir, ignore_errors=True)
        download_extract(store, part, split_dir, workers=config.download_workers)
        mlflow.log_dict(part, f"annotations/split_{name}.json")
    sizes = ", ".join(f"{name} {len(part)}" for name, part in split.items())
    log(f"split {sizes}; downloaded in {time.monotonic() - started:.1f} s")
    return classes, split


def train(config: TrainConfig, open_store: Callable[[str], ObjectStore] | None = None) -> dict[str, float]:
    """Run the whole pipeline inside the MLflow run; returns the final train/validation/test metrics."""
    config.work_path.mkdir(parents=True, exist_ok=True)
    open_store = open_store or default_store_opener(config)
    keras.utils.set_random_seed(config.seed)
    tracking.enable_autolog()
    with tracking.tracked_run():
        tracking.log_params_once(config.params())
        # Weights first: a wrong weights setting fails before minutes of dataset download.
        weights_path = resolve_weights(config.weights, config.weights_file, config.work_path / "weights", open_store)
        classes, _ = fetch_dataset(config, open_store(config.bucket))
        # TensorFlow runs from here: a SIGTERM is only recorded, then raised between batches (see termination).
        with termination.deferred():
            model = build_model(len(classes), config.image_size, weights_path)
            datasets = {
                name: split_dataset(
                    config.split_dir(name), classes, config.image_size, config.batch_size,
                    shuffle=name == "train", seed=config.seed,
                )[0]
                for name in ("train", "evaluate", "test")
            }
            # batch_size is ignored by Keras for a dataset but read by autolog, which would otherwise log
            # "None" and clash with the batch_size param; shuffling is done by the dataset itself.
            history = model.fit(
                datasets["train"], validation_data=datasets["evaluate"], epochs=config.epochs,
                batch_size=config.batch_size, shuffle=False, verbose=2,
                callbacks=[termination.TerminationCallback()],
            )
        tracking.ensure_epoch_metrics(history.history, HISTORY_KEYS)

        with termination.deferred():
            metrics = evaluate_model(model, datasets["test"], termination.TerminationCallback())
        mlflow.log_metrics(metrics)
        log(f"test_loss {metrics['test_loss']:.4f}, test_accuracy {metrics['test_accuracy']:.4f}")
        with termination.deferred():
            truth, predicted = predict_labels(model, datasets["test"], between_batches=termination.raise_if_requested)
        matrix = confusion_matrix(truth, predicted, len(classes))

        config.model_dir.mkdir(parents=True, exist_ok=True)
        for path in (
            plot_history(history.history, config.model_dir / config.model_plot_filename),
            plot_confusion_matrix(matrix, classes, config.model_dir / CONFUSION_MATRIX_FILENAME),
        ):
            mlflow.log_artifact(str(path))
        mlflow.log_dict({"classes": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")

        model.save(config.model_path)
        write_classes(config.model_dir, classes)
        mlflow.log_dict({"classes": classes}, "annotations/classes.json")
        sample = np.asarray(next(iter(datasets["test"].take(1)))[0][:1])
        info = tracking.log_keras_model(model, sample, classes, config.image_size)
        log(f"model saved to {config.model_path} and logged as {info.model_uri}")

    final = {key: float(history.history[key][-1]) for key in HISTORY_KEYS if key in history.history}
    return {**final, **metrics}
