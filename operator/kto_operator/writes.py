"""The reconciler's status writes: one step's write (a single patch, its Event, the metrics) and the entry into
a final phase (the MLflow run closed first). A write from a watched copy is conditional on its resourceVersion;
a final decision is never taken on a copy that may lag (Stale)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from . import jobs, outcome, refusals, status, times
from .api import RUNS
from .context import Context, run_key
from .tracking import MlflowUnavailable, TrackingError
from .views import UNCONFIRMED

logger = logging.getLogger(__name__)

# Reasons reported as Warning events (the others are Normal).
WARNING_REASONS = frozenset(
    {"MlflowUnavailable", "MlflowError", "InvalidSpec", "JobConflict", "JobDeleted", "Unschedulable"}
    | status.IMAGE_PULL_ERRORS
    | status.CONFIG_ERRORS | refusals.REASONS
)


class Stale(Exception):
    """A final decision was about to be taken on a TrainingRun copied from a watch: read it fresh first."""


def event(tr: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the TrainingRun (kopf posts it in the background)."""
    kopf.event(cast(kopf.Body, tr), type=type_, reason=reason, message=message[:1024])


def phase_of(tr: Mapping[str, Any]) -> str | None:
    return (tr.get("status") or {}).get("phase")


def stale(ctx: Context, tr: Mapping[str, Any]) -> bool:
    """True for a copy from a watch that may lag the API server: not the one this replica's last write stored."""
    meta = tr["metadata"]
    return bool(tr.get(UNCONFIRMED)) and not ctx.current(run_key(meta["namespace"], meta["name"]),
                                                         meta.get("resourceVersion"))


def run_ids(tr: Mapping[str, Any]) -> Mapping[str, Any]:
    return (tr.get("status") or {}).get("mlflow") or {}


def uri(ctx: Context, tr: Mapping[str, Any]) -> str:
    return jobs.tracking_uri(tr["spec"], ctx.settings)


async def write(ctx: Context, tr: dict[str, Any], phase: str, reason: str, message: str,
                **fields: Any) -> dict[str, Any] | None:
    """One status patch for this step (none when nothing is worth writing: status.status_patch), an Event
    when the step is worth one (status.event_type), metrics on each transition: the TrainingRun as stored
    after the patch, None without one. Raises Conflict when `tr` came from a watch and the TrainingRun has
    changed since."""
    meta = tr["metadata"]
    current = tr.get("status") or {}
    message = message[: ctx.settings.message_max_chars]
    patch = status.status_patch(current, meta.get("generation"), phase, reason, message, fields, ctx.clock())
    if patch is None:
        return None
    body: dict[str, Any] = {"status": patch}
    if tr.get(UNCONFIRMED):
        body["metadata"] = {"resourceVersion": meta.get("resourceVersion")}
    stored = await ctx.kube.patch(RUNS, meta["namespace"], meta["name"], body, status=True)
    if stored is not None:  # what the API server holds now: later writes of this step are unconditional
        meta["resourceVersion"] = stored["metadata"].get("resourceVersion")
        tr.pop(UNCONFIRMED, None)
    ctx.wrote(run_key(meta["namespace"], meta["name"]), meta["uid"], meta["resourceVersion"] if stored else None,
              final=patch.get("phase") in status.TERMINAL_PHASES)
    tr["status"] = {**current, **patch}
    ctx.metrics.set_phase(meta["uid"], tr["status"].get("phase", phase))
    if "phase" not in patch or (current.get("phase"), current.get("reason")) == (phase, reason):
        return stored
    ctx.metrics.transitions.labels(phase, reason).inc()
    if stored is not None:  # the operator log's line per run and step (kopf's per-handler lines are off: main)
        logger.info("%s/%s: %s (%s)%s", meta["namespace"], meta["name"], phase, reason,
                    f" {message.splitlines()[0]}" if message else "")
    kind = status.event_type(current, phase, reason, WARNING_REASONS)
    if kind:
        event(tr, kind, reason, f"{phase}: {message}" if message else phase)
    return stored


async def finish(ctx: Context, tr: dict[str, Any], phase: str, reason: str, message: str,
                 start_time: str | None = None, ready: str | None = None, **fields: Any) -> bool:
    """Enter a final phase: MLflow status first (FINISHED/FAILED/KILLED unless the trainer set one),
    final metrics, model registration; then the status (with `fields`). With MLflow down the status keeps its
    phase (reason MlflowUnavailable) so that the sweep tries again: a run never stays RUNNING in MLflow.
    Raises Stale for a TrainingRun copied from a watch that may lag: the MLflow run is closed once, on the
    stored state."""
    if stale(ctx, tr):
        raise Stale(tr["metadata"]["name"])
    ids = fields.get("mlflow") or run_ids(tr)
    extra: dict[str, Any] = {**fields, "completionTime": times.format_time(ctx.clock())}
    if start_time and not (tr.get("status") or {}).get("startTime"):
        extra["startTime"] = start_time
    if ready:
        extra["workers"] = ready
    notes: list[str] = []
    if ids.get("runId"):
        try:
            await outcome.close(ctx.tracker, tr["spec"], uri(ctx, tr), ids, phase, extra, notes)
        except MlflowUnavailable as exc:
            ctx.metrics.mlflow_errors.inc()
            current = phase_of(tr) or status.PENDING
            await write(ctx, tr, current, "MlflowUnavailable",
                        f"the run ended ({phase}: {reason}) but MLflow is unreachable, retrying: {exc}", **fields)
            return False
        except TrackingError as exc:
            notes.append(f"MLflow: {exc}")
    await write(ctx, tr, phase, reason, "\n".join([message, *notes]).strip(), **extra)
    return True
