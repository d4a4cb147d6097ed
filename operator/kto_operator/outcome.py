"""What the MLflow run says about a TrainingRun, as status fields: live progress while it runs; at its end
the final MLflow status, the final metrics and the model registration. No status is written here: the
reconciler holds the run's lock and writes what these functions return."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from . import jobs, naming, status, workers
from .tracking import MlflowUnavailable, RegisterRule, Tracker, TrackingError

logger = logging.getLogger(__name__)


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    # NaN and infinities are not JSON numbers: the API server would refuse the whole patch.
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


async def progress(tracker: Tracker, tr: Mapping[str, Any], uri: str, run_id: str) -> dict[str, Any]:
    """Live metrics and `epoch k of n` from the MLflow run; nothing when MLflow cannot say."""
    try:
        metrics = finite(await tracker.metrics(uri, run_id))
        extra = await progress_of(tracker, tr["spec"], uri, run_id, metrics)
    except (MlflowUnavailable, TrackingError) as exc:
        logger.info("progress of %s unavailable: %s", tr["metadata"]["name"], exc)
        return {}
    if metrics:
        extra["metrics"] = metrics
    return extra


async def progress_of(tracker: Tracker, spec: Mapping[str, Any], uri: str, run_id: str,
                      metrics: Mapping[str, float]) -> dict[str, Any]:
    """{"progress": {epoch, epochs}}: epochs done per the metric history, epochs planned per the spec."""
    done = await tracker.epochs_done(uri, run_id, metrics)
    epochs = (spec.get("parameters") or {}).get("epochs")
    if not (done or epochs):
        return {}
    return {"progress": {"epoch": done, **({"epochs": int(epochs)} if epochs else {})}}


async def image(tracker: Tracker, tr: Mapping[str, Any], uri: str, image_id: str | None) -> dict[str, str]:
    """Reproducibility: the image digest tagged on the MLflow run, once; the status field to write with it
    (in the step's one patch). Nothing until the tag is set, so that the status never claims an untagged run."""
    status_ = tr.get("status") or {}
    run_id = (status_.get("mlflow") or {}).get("runId")
    if not image_id or status_.get("imageID") == image_id or not run_id:
        return {}
    try:
        await tracker.set_tag(uri, str(run_id), naming.TAG_IMAGE_ID, image_id)
    except (MlflowUnavailable, TrackingError) as exc:
        logger.warning("image digest not tagged on run %s yet: %s", run_id, exc)
        return {}
    return {"imageID": image_id}


def parameters(spec: Mapping[str, Any]) -> dict[str, str]:
    """The spec's parameters as MLflow params; none for parameters no run was ever started with (InvalidSpec)."""
    try:
        return jobs.validate_parameters(spec.get("parameters") or {})
    except jobs.InvalidSpec:
        return {}


async def close(tracker: Tracker, spec: Mapping[str, Any], uri: str, ids: Mapping[str, Any], phase: str,
                extra: dict[str, Any], notes: list[str]) -> None:
    """Close the MLflow run of a run entering final `phase` (FINISHED/FAILED/KILLED unless the trainer set
    one; the spec's parameters the trainer did not log are logged first), read its final metrics and register
    the model its spec asks for. Fills `extra` (status fields) and `notes` (lines of the message) as it goes,
    so that what was done before an error is kept. Raises MlflowUnavailable and TrackingError."""
    run_id = str(ids["runId"])
    closed = await tracker.terminate(uri, run_id, status.MLFLOW_STATUS[phase], workers.mlflow_overrides(spec, phase),
                                     params=parameters(spec))
    if closed.params_refused:
        notes.append(f"MLflow refused params: {closed.params_refused}")
    metrics = finite(await tracker.metrics(uri, run_id))
    rule = RegisterRule.from_spec(spec.get("registerModel"))
    if phase == status.SUCCEEDED and rule:
        value = metrics.get(rule.metric)
        if value is None:
            notes.append(f"model not registered: metric {rule.metric} was not logged")
        elif rule.passes(value):
            extra["modelVersion"] = await tracker.register(uri, run_id, str(ids.get("experimentId")), rule)
            notes.append(f"model {rule.name} version {extra['modelVersion']} registered")
        else:
            notes.append(f"model not registered: {rule.metric}={value:.4g} misses threshold {rule.threshold}")
    if metrics:
        extra["metrics"] = metrics
        primary = status.primary_metric(metrics, rule.metric if rule else None)
        if primary:
            extra["primaryMetric"] = primary
    extra.update(await progress_of(tracker, spec, uri, run_id, metrics))
