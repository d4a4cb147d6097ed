"""`train(config)`: the course's pipeline end to end, tracked in MLflow; alone or as one of several workers."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np

from . import distribute, multiworker, termination, tracking
from .annotations import dataset_fingerprint, parse_annotations
from .cluster import Cluster, cluster_from_env, per_worker_batch
from .config import ANNOTATION_KEY, TrainConfig
from .data import list_split_files, split_dataset
from .evaluate import confusion_matrix, evaluate_model, predict_labels
from .inference import write_classes
from .model import build_model, resolve_weights
from .plots import plot_confusion_matrix, plot_history
from .s3io import DirStore, ObjectStore, S3Store, download_extract, make_client
from .split import Split, split_extract

ANNOTATION_FILENAME = "cats_dogs_others-annotations.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
DEVICES_TAG = "kto.devices"
WORKERS_TAG = "kto.workers"
PRECISION_TAG = "kto.precision"


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


def fetch_dataset(config: TrainConfig, store: ObjectStore, *, record: bool = True) -> tuple[list[str], Split]:
    """Steps 1-2: annotations -> extract/classes -> split -> images in `<working_dir>/<split>/<label>/`.
    `record`: log the annotations, split and dataset tags to the active MLflow run (the chief's job)."""
    annotation_bytes = store.read(ANNOTATION_KEY)
    (config.work_path / ANNOTATION_FILENAME).write_bytes(annotation_bytes)
    extract, classes = parse_annotations(annotation_bytes, source=store.url(ANNOTATION_KEY))
    if record:
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
    # Seeded: every worker of a cluster computes the same split.
    split = split_extract(extract, classes, config.ratios, config.seed)
    started = time.monotonic()
    for name, part in split.items():
        split_dir = config.split_dir(name)
        # Leftovers of an earlier run with another split would leak into this one.
        shutil.rmtree(split_dir, ignore_errors=True)
        download_extract(store, part, split_dir, workers=config.download_workers)
        if record:
            mlflow.log_dict(part, f"annotations/split_{name}.json")
    sizes = ", ".join(f"{name} {len(part)}" for name, part in split.items())
    log(f"split {sizes}; downloaded in {time.monotonic() - started:.1f} s")
    return classes, split


def fit(config: TrainConfig, classes: list[str], weights_path: Path | None, cluster: Cluster,
        strategy: Any) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build the model under the strategy and train it on this worker's share of train and evaluate; the
    model and its per-epoch history. Alone: Keras' fit (autolog logs each epoch). In a cluster: the
    multi-worker loop, the chief logging each epoch itself."""
    with strategy.scope():
        model = build_model(len(classes), config.image_size, weights_path)
    datasets = {
        name: distribute.worker_dataset(
            strategy, cluster, *list_split_files(config.split_dir(name), classes), config.image_size,
            config.batch_size, shuffle=name == "train", seed=config.seed,
        )
        for name in ("train", "evaluate")
    }
    if cluster.size > 1:
        return model, multiworker.fit_cluster(
            model, strategy, datasets["train"], datasets["evaluate"], epochs=config.epochs,
            global_batch=config.batch_size, on_epoch=_epoch_logger(config.epochs, record=cluster.is_chief),
            stop_requested=termination.requested, stop=termination.stop,
        )
    # batch_size is ignored by Keras for a dataset but read by autolog, which would otherwise log
    # "None" and clash with the batch_size param; shuffling is done by the dataset itself.
    history = model.fit(
        datasets["train"], validation_data=datasets["evaluate"], epochs=config.epochs,
        batch_size=config.batch_size, shuffle=False, verbose=2,
        callbacks=[termination.TerminationCallback()],
    )
    return model, history.history


def _epoch_logger(epochs: int, *, record: bool) -> Callable[[int, dict[str, float]], None]:
    """One line per epoch (Keras' verbose=2 style); the chief also logs the epoch's metrics to MLflow (step =
    epoch, as autolog does), which is what the operator's `epoch k of n` counts."""

    def on_epoch(epoch: int, logs: dict[str, float]) -> None:
        metrics = {key: value for key, value in logs.items() if key in HISTORY_KEYS}
        log(f"epoch {epoch + 1}/{epochs} - {logs.get('seconds', 0.0):.1f}s - "
            + " - ".join(f"{key}: {value:.4f}" for key, value in metrics.items()))
        if record:
            mlflow.log_metrics(metrics, step=epoch)

    return on_epoch


def _final(history: dict[str, list[float]]) -> dict[str, float]:
    return {key: float(history[key][-1]) for key in HISTORY_KEYS if key in history}


def train(config: TrainConfig, open_store: Callable[[str], ObjectStore] | None = None) -> dict[str, float]:
    """Run the whole pipeline inside the MLflow run; returns the final train/validation/test metrics.

    In a cluster (TF_CONFIG, or the operator's KTO_WORKER_HOSTS) every worker trains on its share of the
    data; only the chief (worker 0) touches MLflow, evaluates and saves the model."""
    cluster = cluster_from_env(os.environ)
    per_worker_batch(config.batch_size, cluster)  # a bad batch size fails before any download
    config.work_path.mkdir(parents=True, exist_ok=True)
    open_store = open_store or default_store_opener(config)
    # Workers wait for each other at every step: none may run more threads than its CPU limit.
    threads = distribute.fit_threads_to_cpu_limit(os.environ) if cluster.size > 1 else None
    strategy = distribute.make_strategy(cluster)
    if cluster.size > 1:
        termination.reclaim()  # the strategy's coordination service took SIGTERM over
    keras.utils.set_random_seed(config.seed)
    precision = distribute.set_precision(config.mixed_precision)
    if cluster.size > 1:
        sized = f"; TensorFlow threads: {threads}, as its CPU limit" if threads else ""
        log(f"worker {cluster.index} of {cluster.size} ({', '.join(cluster.workers)}){sized}")
    if not cluster.is_chief:
        return _train_worker(config, cluster, strategy, open_store)
    tracking.enable_autolog()
    with tracking.tracked_run():
        tracking.log_params_once(config.params())
        mlflow.set_tags({DEVICES_TAG: ", ".join(distribute.device_names()), WORKERS_TAG: str(cluster.size),
                         PRECISION_TAG: precision})
        # Weights first: a wrong weights setting fails before minutes of dataset download.
        weights_path = resolve_weights(config.weights, config.weights_file, config.work_path / "weights", open_store)
        classes, _ = fetch_dataset(config, open_store(config.bucket))
        # TensorFlow runs from here: a SIGTERM is only recorded, then raised between batches (see termination).
        with termination.deferred():
            model, history = fit(config, classes, weights_path, cluster, strategy)
        tracking.ensure_epoch_metrics(history, HISTORY_KEYS)
        if cluster.size > 1:
            model = distribute.local_copy(model, lambda: build_model(len(classes), config.image_size))
        test = split_dataset(config.split_dir("test"), classes, config.image_size, config.batch_size,
                             shuffle=False, seed=config.seed)[0]

        with termination.deferred():
            metrics = evaluate_model(model, test, termination.TerminationCallback())
        mlflow.log_metrics(metrics)
        log(f"test_loss {metrics['test_loss']:.4f}, test_accuracy {metrics['test_accuracy']:.4f}")
        with termination.deferred():
            truth, predicted = predict_labels(model, test, between_batches=termination.raise_if_requested)
        matrix = confusion_matrix(truth, predicted, len(classes))

        config.model_dir.mkdir(parents=True, exist_ok=True)
        for path in (
            plot_history(history, config.model_dir / config.model_plot_filename),
            plot_confusion_matrix(matrix, classes, config.model_dir / CONFUSION_MATRIX_FILENAME),
        ):
            mlflow.log_artifact(str(path))
        mlflow.log_dict({"classes": classes, "matrix": matrix.tolist()}, "confusion_matrix.json")

        model.save(config.model_path)
        write_classes(config.model_dir, classes)
        mlflow.log_dict({"classes": classes}, "annotations/classes.json")
        sample = np.asarray(next(iter(test.take(1)))[0][:1])
        info = tracking.log_keras_model(model, sample, classes, config.image_size)
        log(f"model saved to {config.model_path} and logged as {info.model_uri}")

    return {**_final(history), **metrics}


def _train_worker(config: TrainConfig, cluster: Cluster, strategy: Any,
                  open_store: Callable[[str], ObjectStore]) -> dict[str, float]:
    """A worker other than the chief: the same weights, split and steps, nothing recorded (the chief's run is
    the one MLflow run); done once training is (evaluation and the model are the chief's)."""
    weights_path = resolve_weights(config.weights, config.weights_file, config.work_path / "weights", open_store)
    classes, _ = fetch_dataset(config, open_store(config.bucket), record=False)
    with termination.deferred():
        _, history = fit(config, classes, weights_path, cluster, strategy)
    return _final(history)
