"""MLflow side of the trainer: continue the operator's run, log params/artifacts/model, end the run."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import mlflow
import mlflow.keras
import numpy as np
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from .errors import TrainerError

MODEL_ARTIFACT_NAME = "model"
ERROR_TAG = "kto.error"
MODEL_URI_TAG = "kto.model_uri"
_TAG_VALUE_LIMIT = 4000


class Terminated(BaseException):
    # A BaseException, like KeyboardInterrupt: a signal, not an error, so `except Exception` lets it pass.
    """Raised by the CLI's SIGTERM handler so the run ends as KILLED (pod deleted / run cancelled)."""


def enable_autolog() -> None:
    """Autolog fit params and per-epoch metrics (step = epoch) through MLflow's Keras 3 integration.

    The `tensorflow` flavor is excluded: on TF 2.21 its TensorBoard-based callback makes `fit` fail
    (TBNotInstalledError, tensorflow-cpu no longer pulls TensorBoard in), and it would log the same
    metrics twice. Models are logged explicitly (Keras format + signature); datasets are not autologged.
    """
    mlflow.autolog(log_models=False, log_datasets=False, exclude_flavors=["tensorflow"], silent=True)


def ensure_epoch_metrics(history: Mapping[str, Sequence[float]], keys: Sequence[str]) -> list[str]:
    """Log per-epoch metrics autolog did not log (it disables itself on any internal error).

    The operator shows "epoch k of n" from these histories, so they must exist. Returns the keys logged here.
    """
    run = mlflow.active_run()
    assert run is not None
    # Autolog's callback logs asynchronously: wait for its queue, or its metrics would look missing.
    mlflow.flush_async_logging()
    client = mlflow.MlflowClient()
    filled = []
    for key in keys:
        values = list(history.get(key, []))
        if values and not client.get_metric_history(run.info.run_id, key):
            for epoch, value in enumerate(values):
                mlflow.log_metric(key, float(value), step=epoch)
            filled.append(key)
    return filled


@contextmanager
def tracked_run() -> Iterator[mlflow.ActiveRun]:
    """Continue the run named by MLFLOW_RUN_ID (created by the operator) or start a new one.

    Without MLFLOW_RUN_ID, the experiment comes from MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME
    (created if missing). The run ends FINISHED, FAILED (with the error as a tag) or KILLED (SIGTERM).
    """
    run_id = os.environ.get("MLFLOW_RUN_ID") or None
    try:
        experiment_id = None
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if run_id is None and name and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
            # Not mlflow.set_experiment: no process-wide state, and the experiment is created if missing.
            client = mlflow.MlflowClient()
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id)
    except MlflowException as error:
        target = f"run {run_id}" if run_id else "a new run"
        raise TrainerError(f"cannot open MLflow {target}: {error.message.splitlines()[0]}") from None
    try:
        yield run
    except Terminated:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        _set_error_tag(error)
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


# Each refused write means another writer logged some of the params meanwhile; it has a finite number.
_PARAM_ATTEMPTS = 3


def _set_error_tag(error: BaseException) -> None:
    message = f"{type(error).__name__}: {error}"[:_TAG_VALUE_LIMIT]
    # The tracking server may be what failed; the CLI prints the error anyway.
    with contextlib.suppress(MlflowException):
        mlflow.set_tag(ERROR_TAG, message)


def log_params_once(params: Mapping[str, str]) -> dict[str, str]:
    """Log the params the run does not hold yet (the operator logs those still missing when the run ends, for a
    trainer that logs none). MLflow refuses to change a logged param: when a write is refused another writer was
    first, its values stand, and only what is still missing is logged again."""
    run = mlflow.active_run()
    assert run is not None
    for attempt in range(1, _PARAM_ATTEMPTS + 1):
        existing = mlflow.get_run(run.info.run_id).data.params
        new = {key: value for key, value in params.items() if key not in existing}
        try:
            if new:
                mlflow.log_params(new)
            break
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE" or attempt == _PARAM_ATTEMPTS:
                raise
    for key, value in params.items():
        if key in existing and existing[key] != value:
            print(f"kto-train: param {key}={value} differs from the run's {existing[key]}; kept", file=sys.stderr)
    return new


def _pinned(distribution: str) -> str | None:
    try:
        return f"{distribution}=={importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return None


def model_requirements() -> list[str]:
    # Given explicitly: MLflow would otherwise load the model in a subprocess to infer them (slow).
    candidates = ("keras", "tensorflow-cpu", "tensorflow", "numpy", "pillow")
    return [pin for pin in map(_pinned, candidates) if pin]


def log_keras_model(
    model: keras.Model, sample: np.ndarray, classes: Sequence[str], image_size: int
) -> Any:
    """Log the model in MLflow's Keras format with a tensor signature; returns the ModelInfo."""
    signature = infer_signature(sample, np.asarray(model.predict_on_batch(sample)))
    info = mlflow.keras.log_model(
        model,
        name=MODEL_ARTIFACT_NAME,
        signature=signature,
        pip_requirements=model_requirements(),
        metadata={
            "classes": list(classes),
            "image_size": image_size,
            # The model's first layer does the VGG16 preprocessing: callers send raw pixels.
            "input": "raw RGB pixels, float32 in [0, 255], image resized to image_size x image_size",
        },
    )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info
