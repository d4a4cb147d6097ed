"""What the handlers do, per TrainingRun, under one lock: start (MLflow run, then Job), follow, finish,
cancel, clean up. Every step re-reads the TrainingRun and is idempotent, so any handler may call it at
any time and a restarted operator simply calls it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from . import indexed, jobs, naming, outcome, refusals, status, times
from .api import JOBS, RUNS, SERVICES, JobConflict, JobRejected
from .context import Context, PlatformGate
from .tracking import MlflowUnavailable, RunInfo, TrackingError

__all__ = ["Context", "PlatformGate", "ensure_started", "finalize", "follow", "seen"]

logger = logging.getLogger(__name__)

# Reasons reported as Warning events (the others are Normal).
WARNING_REASONS = frozenset(
    {"MlflowUnavailable", "MlflowError", "InvalidSpec", "JobConflict", "JobDeleted", "Unschedulable"}
    | status.IMAGE_PULL_ERRORS
    | status.CONFIG_ERRORS | refusals.REASONS
)
JOB_CONFLICT_DELAY = 5.0
POD_STOP_DELAY = 1.0
PLATFORM_DELAY = 5.0

def _event(tr: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the TrainingRun (kopf posts it in the background)."""
    kopf.event(cast(kopf.Body, tr), type=type_, reason=reason, message=message[:1024])


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _phase(tr: Mapping[str, Any]) -> str | None:
    return (tr.get("status") or {}).get("phase")


def _run_ids(tr: Mapping[str, Any]) -> Mapping[str, Any]:
    return (tr.get("status") or {}).get("mlflow") or {}


def _uri(ctx: Context, tr: Mapping[str, Any]) -> str:
    return jobs.tracking_uri(tr["spec"], ctx.settings)


def _run_url(ctx: Context, tr: Mapping[str, Any], run: RunInfo) -> str:
    override = (tr["spec"].get("mlflow") or {}).get("trackingUri")
    base = override.rstrip("/") if override else ctx.settings.ui_base
    return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


async def _write(ctx: Context, tr: dict[str, Any], phase: str, reason: str, message: str, **extra: Any) -> None:
    """Patch the status (only if something changed), with an Event and metrics on each transition."""
    meta = tr["metadata"]
    current = tr.get("status") or {}
    message = message[: ctx.settings.message_max_chars]
    changed_phase = (current.get("phase"), current.get("reason")) != (phase, reason)
    patch: dict[str, Any] = {k: v for k, v in extra.items() if current.get(k) != v}
    if changed_phase or current.get("message") != message:
        patch.update(phase=phase, reason=reason, message=message)
    if changed_phase:
        patch["conditions"] = status.conditions_for(current.get("conditions") or [], phase, reason, message,
                                                    ctx.clock())
    if not patch and current.get("observedGeneration") == meta.get("generation"):
        return
    patch["observedGeneration"] = meta.get("generation")
    await ctx.kube.patch(RUNS, meta["namespace"], meta["name"], {"status": patch}, status=True)
    tr["status"] = {**current, **patch}
    ctx.metrics.set_phase(meta["uid"], phase)
    if changed_phase:
        ctx.metrics.transitions.labels(phase, reason).inc()
        text = f"{phase}: {message}" if message else phase
        warning = phase == status.FAILED or reason in WARNING_REASONS
        _event(tr, "Warning" if warning else "Normal", reason, text)


async def _finish(ctx: Context, tr: dict[str, Any], phase: str, reason: str, message: str,
                  start_time: str | None = None, ready: str | None = None) -> bool:
    """Enter a final phase: MLflow status first (FINISHED/FAILED/KILLED unless the trainer set one),
    final metrics, model registration; then the status. With MLflow down the status keeps its phase
    (reason MlflowUnavailable) so that the timer tries again: a run never stays RUNNING in MLflow."""
    ids = _run_ids(tr)
    extra: dict[str, Any] = {"completionTime": times.format_time(ctx.clock())}
    if start_time and not (tr.get("status") or {}).get("startTime"):
        extra["startTime"] = start_time
    if ready:
        extra["workers"] = ready
    notes: list[str] = []
    if ids.get("runId"):
        try:
            await outcome.close(ctx.tracker, tr["spec"], _uri(ctx, tr), ids, phase, extra, notes)
        except MlflowUnavailable as exc:
            ctx.metrics.mlflow_errors.inc()
            current = _phase(tr) or status.PENDING
            await _write(ctx, tr, current, "MlflowUnavailable",
                         f"the run ended ({phase}: {reason}) but MLflow is unreachable, retrying: {exc}")
            return False
        except TrackingError as exc:
            notes.append(f"MLflow: {exc}")
    await _write(ctx, tr, phase, reason, "\n".join([message, *notes]).strip(), **extra)
    return True


async def _fresh(ctx: Context, namespace: str, name: str) -> dict[str, Any] | None:
    """The TrainingRun as stored now, or None when there is nothing left to do for it."""
    tr = await ctx.kube.get(RUNS, namespace, name)
    if tr is None or tr["metadata"].get("deletionTimestamp") or _phase(tr) in status.TERMINAL_PHASES:
        return None
    tr.setdefault("status", {})
    return tr


async def ensure_started(ctx: Context, namespace: str, name: str, attempt: int = 0) -> None:
    """Create (or find) the MLflow run, then the Job. Raises kopf.TemporaryError to be retried."""
    async with ctx.locks.hold(_key(namespace, name)):
        tr = await _fresh(ctx, namespace, name)
        if tr is None:
            return
        if tr["spec"].get("cancel"):
            await _cancel(ctx, tr)
            return
        try:
            jobs.build_job(tr, ctx.settings, jobs.MlflowIds("-", "-", "-"))  # validation only
        except jobs.InvalidSpec as exc:
            await _finish(ctx, tr, status.FAILED, "InvalidSpec", str(exc))
            return
        fresh_run = False
        if not _run_ids(tr).get("runId"):
            created = await _ensure_run(ctx, tr, attempt)
            if created is None:
                return
            fresh_run = created
        ids = _run_ids(tr)
        resumed = bool(tr["status"].get("jobName"))
        # A new Job has no pod yet: its watch events bring the next update.
        if not resumed and not await _ensure_job(
                ctx, tr, jobs.MlflowIds(str(ids["runId"]), str(ids["experimentId"]), _uri(ctx, tr))):
            return
        # Params after the Job: one MLflow round trip less between submission and Job (the trainer gets
        # them as arguments). After a restart only the missing ones are logged.
        await _log_params(ctx, tr, attempt, fresh=fresh_run)
        if resumed:
            await _follow(ctx, tr, with_progress=False)  # operator restart: catch up with what happened


async def _ensure_run(ctx: Context, tr: dict[str, Any], attempt: int) -> bool | None:
    """Find or create the MLflow run and record it: True if created now, False if found, None when the
    run can never start (Failed)."""
    meta, spec = tr["metadata"], tr["spec"]
    if ctx.platform_gate is not None:
        waiting = await ctx.platform_gate(meta["namespace"])
        if waiting:
            await _write(ctx, tr, status.WAITING_FOR_PLATFORM, "WaitingForPlatform", waiting)
            raise kopf.TemporaryError(waiting, delay=PLATFORM_DELAY)
    tags = naming.run_tags(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                           job=naming.job_name(meta["name"]), image=spec["image"])
    # An empty status means no attempt was ever made, so no run can exist: skip the search. The status is
    # written before the create, so any later attempt (after a crash or a timeout) searches first.
    never_tried = not tr["status"]
    if never_tried:
        await _write(ctx, tr, status.PENDING, "CreatingRun", "creating the MLflow run")
    try:
        run, created = await ctx.tracker.ensure_run(_uri(ctx, tr), spec["experiment"], meta["uid"], meta["name"],
                                                    tags, search=not never_tried)
    except MlflowUnavailable as exc:
        ctx.metrics.mlflow_errors.inc()
        delay = ctx.settings.retry_delay(attempt)
        await _write(ctx, tr, status.PENDING, "MlflowUnavailable", f"{exc} (retrying in {delay:.0f}s)")
        raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except TrackingError as exc:
        await _finish(ctx, tr, status.FAILED, "MlflowError", str(exc))
        return None
    await _write(ctx, tr, status.PENDING, "RunCreated", f"MLflow run {run.run_id} ready",
                 mlflow={"runId": run.run_id, "experimentId": run.experiment_id, "url": _run_url(ctx, tr, run)})
    return created


async def _log_params(ctx: Context, tr: dict[str, Any], attempt: int, *, fresh: bool) -> None:
    params = jobs.validate_parameters(tr["spec"].get("parameters") or {})
    if not params:
        return
    try:
        await ctx.tracker.log_params(_uri(ctx, tr), str(_run_ids(tr)["runId"]), params, fresh=fresh)
    except MlflowUnavailable as exc:
        ctx.metrics.mlflow_errors.inc()
        raise kopf.TemporaryError(f"log params: {exc}", delay=ctx.settings.retry_delay(attempt)) from exc
    except TrackingError as exc:
        # E.g. the trainer logged one first with another text: its value stands; the run goes on.
        _event(tr, "Warning", "ParamsNotLogged", str(exc))


async def _ensure_job(ctx: Context, tr: dict[str, Any], ids: jobs.MlflowIds) -> bool:
    """Create (or find) the Job; False when the API server refuses it for good (the run Failed)."""
    meta = tr["metadata"]
    manifest = jobs.build_job(tr, ctx.settings, ids)
    service = indexed.build_service(manifest, jobs.owner_reference(tr))  # workers > 1: before its pods
    try:
        if service is not None:
            await ctx.kube.create_owned(SERVICES, service, meta["uid"])
        created = await ctx.kube.create_owned(JOBS, manifest, meta["uid"])
    except JobConflict as exc:
        await _write(ctx, tr, status.PENDING, "JobConflict", str(exc))
        raise kopf.TemporaryError(str(exc), delay=JOB_CONFLICT_DELAY) from exc
    except JobRejected as exc:
        # Refused for good: no retry can make the Job valid, so the run fails with the API server's reason.
        if not await _finish(ctx, tr, status.FAILED, "InvalidSpec", f"the API server refused the trainer Job: {exc}"):
            # MLflow unreachable: no timer follows a run without a Job, so the start handler tries again.
            raise kopf.TemporaryError(f"Job refused, MLflow unreachable: {exc}", delay=ctx.settings.retry_delay(0)) \
                from exc
        return False
    name = manifest["metadata"]["name"]
    if created:
        submitted = times.parse_time(meta.get("creationTimestamp"))
        if submitted:
            ctx.metrics.submit_to_job.observe(max(0.0, (ctx.clock() - submitted).total_seconds()))
    await _write(ctx, tr, status.PENDING, "JobCreated", f"Job {name} created", jobName=name)
    return True


async def follow(ctx: Context, namespace: str, name: str, *, with_progress: bool) -> None:
    """Bring the status up to date with the Job, its pods and (with_progress) the MLflow run."""
    key = _key(namespace, name)
    if not ctx.coalescer.enter(key, with_progress):
        return
    progress: bool | None = with_progress
    try:
        while progress is not None:
            await _follow_once(ctx, namespace, name, with_progress=progress)
            progress = ctx.coalescer.again(key)
    finally:
        while progress is not None:  # after an error: release the key (the next event or tick retries)
            progress = ctx.coalescer.again(key)


async def _follow_once(ctx: Context, namespace: str, name: str, *, with_progress: bool) -> None:
    async with ctx.locks.hold(_key(namespace, name)):
        tr = await _fresh(ctx, namespace, name)
        if tr is None:
            ctx.forget_jobs_of(namespace, name)
            return
        if tr["spec"].get("cancel"):
            await _cancel(ctx, tr)
        elif tr["status"].get("jobName"):
            await _follow(ctx, tr, with_progress=with_progress)


async def _follow(ctx: Context, tr: dict[str, Any], *, with_progress: bool) -> None:
    meta, current = tr["metadata"], tr["status"]
    job_name = current["jobName"]
    job = await ctx.kube.get(JOBS, meta["namespace"], job_name)
    if job is None:
        # Gone: fine if its last known state was final (TTL deletion), else the run cannot end well.
        job = ctx.last_job(meta["uid"])
        if job is None or job["metadata"].get("name") != job_name or not status.job_finished(job):
            await _finish(ctx, tr, status.FAILED, "JobDeleted", f"Job {job_name} was deleted before the run ended")
            return
    observed = await refusals.observe(ctx.kube, job, meta["namespace"], meta["uid"], ctx.clock(), ctx.limits)
    await _record_image(ctx, tr, observed.image_id)
    if observed.terminal:
        finished = await _finish(ctx, tr, observed.phase, observed.reason, observed.message, observed.start_time,
                                 observed.workers)
        if finished:
            ctx.last_job(meta["uid"], forget=True)
        # After the status (else a retry would see the Job gone and lose the reason).
        if finished and observed.stop_job and \
                await ctx.kube.delete_owned(JOBS, meta["namespace"], job_name, meta["uid"]):
            _event(tr, "Normal", "JobDeleted", f"Job {job_name} deleted: {observed.reason} does not heal")
        return
    extra: dict[str, Any] = {"workers": observed.workers} if observed.workers else {}
    if observed.start_time and not current.get("startTime"):
        extra["startTime"] = observed.start_time
    run_id = _run_ids(tr).get("runId")
    if observed.phase == status.RUNNING and with_progress and run_id:
        extra.update(await outcome.progress(ctx.tracker, tr, _uri(ctx, tr), str(run_id)))
    await _write(ctx, tr, observed.phase, observed.reason, observed.message, **extra)


async def _record_image(ctx: Context, tr: dict[str, Any], image_id: str | None) -> None:
    """Reproducibility: the image digest on the MLflow run (tag) and in the status, once."""
    ids = _run_ids(tr)
    if not image_id or (tr.get("status") or {}).get("imageID") == image_id or not ids.get("runId"):
        return
    try:
        await ctx.tracker.set_tag(_uri(ctx, tr), str(ids["runId"]), naming.TAG_IMAGE_ID, image_id)
    except (MlflowUnavailable, TrackingError) as exc:
        logger.warning("image digest not tagged on run %s yet: %s", ids["runId"], exc)
        return
    meta = tr["metadata"]
    await ctx.kube.patch(RUNS, meta["namespace"], meta["name"], {"status": {"imageID": image_id}}, status=True)
    tr["status"] = {**(tr.get("status") or {}), "imageID": image_id}


async def _cancel(ctx: Context, tr: dict[str, Any]) -> None:
    """spec.cancel: stop the pods (Job deleted, pods removed in the background), then MLflow KILLED and
    phase Cancelled once no trainer runs any more (a trainer still starting could set RUNNING again)."""
    meta = tr["metadata"]
    job_name = naming.job_name(meta["name"])
    job = await ctx.kube.get(JOBS, meta["namespace"], job_name) if tr["status"].get("jobName") else None
    if job is not None and status.job_finished(job):
        await _follow(ctx, tr, with_progress=False)  # too late to cancel: record how the run really ended
        return
    if await ctx.kube.delete_owned(JOBS, meta["namespace"], job_name, meta["uid"]):
        _event(tr, "Normal", "JobDeleted", f"Job {job_name} deleted (cancel)")
    live = await refusals.live_pods(ctx.kube, tr)
    if live:
        # Pod deletion events (and the timer) bring us back here.
        await _write(ctx, tr, _phase(tr) or status.PENDING, "Cancelling", f"stopping pod {', '.join(live)}")
        return
    if not _run_ids(tr).get("runId"):
        await _adopt_run(ctx, tr)
    await _finish(ctx, tr, status.CANCELLED, "Cancelled", "cancelled (spec.cancel: true)")


async def _adopt_run(ctx: Context, tr: dict[str, Any]) -> None:
    """Find a run created just before a crash (its id never reached the status) so it gets closed too."""
    meta = tr["metadata"]
    try:
        run = await ctx.tracker.lookup_run(_uri(ctx, tr), tr["spec"]["experiment"], meta["uid"])
    except (MlflowUnavailable, TrackingError) as exc:
        logger.info("cannot look for the MLflow run of %s: %s", meta["name"], exc)
        return
    if run is not None:
        tr["status"]["mlflow"] = {"runId": run.run_id, "experimentId": run.experiment_id}


async def finalize(ctx: Context, namespace: str, name: str, attempt: int, elapsed: float) -> None:
    """Deletion: stop the pods, then mark the MLflow run KILLED (not before: a trainer still starting could
    set it RUNNING again). Retried until settings.delete_timeout, then the object goes anyway."""
    key = _key(namespace, name)
    async with ctx.locks.hold(key):
        tr = await ctx.kube.get(RUNS, namespace, name)
        if tr is None:
            return
        tr.setdefault("status", {})
        meta = tr["metadata"]
        left = ctx.settings.delete_timeout - elapsed
        await ctx.kube.delete_owned(JOBS, namespace, naming.job_name(name), meta["uid"])
        if await refusals.live_pods(ctx.kube, tr) and left > 0:
            raise kopf.TemporaryError("waiting for the trainer pods to stop", delay=POD_STOP_DELAY)
        if _phase(tr) not in status.TERMINAL_PHASES:
            try:
                run_id = _run_ids(tr).get("runId")
                if not run_id:
                    found = await ctx.tracker.lookup_run(_uri(ctx, tr), tr["spec"]["experiment"], meta["uid"])
                    run_id = found.run_id if found else None
                if run_id:
                    await ctx.tracker.terminate(_uri(ctx, tr), str(run_id), "KILLED")
            except MlflowUnavailable as exc:
                ctx.metrics.mlflow_errors.inc()
                if left > 0:
                    delay = min(ctx.settings.retry_delay(attempt), max(left, 1.0))
                    raise kopf.TemporaryError(str(exc), delay=delay) from exc
                _event(tr, "Warning", "MlflowUnavailable",
                       f"MLflow unreachable for {elapsed:.0f}s; its run is left as is: {exc}")
            except TrackingError as exc:
                _event(tr, "Warning", "MlflowError", str(exc))
        ctx.metrics.set_phase(meta["uid"], None)
        ctx.last_job(meta["uid"], forget=True)


def seen(ctx: Context, tr: Mapping[str, Any]) -> None:
    """Count a TrainingRun in the per-phase gauge (at startup, before anything changes)."""
    ctx.metrics.set_phase(tr["metadata"]["uid"], _phase(tr) or status.PENDING)
