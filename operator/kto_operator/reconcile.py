"""What the handlers do, per TrainingRun, under one lock: start (MLflow run, then Job), follow, finish,
cancel, clean up. Every step is idempotent, so any handler may call it at any time and a restarted operator
simply calls it again. A step starts from what the watches hold (views.Views): its status write is conditional
on that TrainingRun's resourceVersion, and a decision that cannot be undone (closing the MLflow run, a final
phase) first reads the TrainingRun from the API server, unless the copy is the one this replica's own last
write stored (Context.current); either way a stale copy costs one read more, never a wrong write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import diffbase, indexed, jobs, naming, outcome, refusals, status, times, writes
from .api import JOBS, RUNS, SERVICES, Conflict, JobConflict, JobRejected
from .context import Context, PlatformGate, run_key
from .tracking import MlflowUnavailable, RunInfo, TrackingError
from .views import Views, working_copy

__all__ = ["Context", "PlatformGate", "Views", "ensure_started", "follow", "seen"]

logger = logging.getLogger(__name__)

JOB_CONFLICT_DELAY = 5.0
PLATFORM_DELAY = 5.0


def _key(namespace: str, name: str) -> str:
    return run_key(namespace, name)


def _run_url(ctx: Context, tr: Mapping[str, Any], run: RunInfo) -> str:
    override = (tr["spec"].get("mlflow") or {}).get("trackingUri")
    base = override.rstrip("/") if override else ctx.settings.ui_base
    return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


async def _fresh(ctx: Context, namespace: str, name: str) -> dict[str, Any] | None:
    """The TrainingRun as stored now, or None when there is nothing left to do for it."""
    tr = await ctx.kube.get(RUNS, namespace, name)
    if tr is None or tr["metadata"].get("deletionTimestamp") or writes.phase_of(tr) in status.TERMINAL_PHASES:
        return None
    tr.setdefault("status", {})
    return tr


async def ensure_started(ctx: Context, views: Views, namespace: str, name: str, attempt: int = 0,
                         handled: str | None = None) -> None:
    """Create (or find) the MLflow run, then the Job. Raises kopf.TemporaryError to be retried. `handled`: kopf's
    diff base of this creation (diffbase.encode), written with the JobCreated status (see kto_operator.diffbase)."""
    async with ctx.locks.hold(_key(namespace, name)):
        tr = views.run(namespace, name)
        if tr is None:
            return
        try:
            await _start(ctx, views, tr, attempt, handled)
        except (Conflict, writes.Stale):
            tr = await _fresh(ctx, namespace, name)
            if tr is not None:
                await _start(ctx, views, tr, attempt, handled)


async def _start(ctx: Context, views: Views, tr: dict[str, Any], attempt: int, handled: str | None) -> None:
    if tr["spec"].get("cancel"):
        await _cancel(ctx, views, tr)
        return
    try:
        jobs.build_job(tr, ctx.settings, jobs.MlflowIds("-", "-", "-"))  # validation only
    except jobs.InvalidSpec as exc:
        await writes.finish(ctx, tr, status.FAILED, "InvalidSpec", str(exc))
        return
    run_fields: dict[str, Any] = {}
    if not writes.run_ids(tr).get("runId"):
        made = await _ensure_run(ctx, views, tr, attempt)
        if made is None:
            return
        run_fields = made
    if tr["status"].get("jobName"):  # operator restart: catch up with what happened
        await _follow(ctx, views, tr, with_progress=False)
        return
    job_fields = await _ensure_job(ctx, tr, run_fields)
    if job_fields is None:
        return
    # The run's one MLflow call before its Job is the run's creation: the trainer gets the parameters as arguments
    # and logs them, the close logs any it did not (outcome.close). This write carries kopf's diff base: kopf
    # retries a failed start only while that differs.
    run_id = (run_fields.get("mlflow") or writes.run_ids(tr))["runId"]
    stored = await writes.write(ctx, tr, status.PENDING, status.NO_POD,
                                f"Job {job_fields['jobName']} created, MLflow run {run_id}",
                                **job_fields, **(diffbase.status_field(handled) if handled else {}))
    ctx.maybe_created.discard(tr["metadata"]["uid"])  # the status names the run now
    if handled and diffbase.carried(stored) == handled:  # not when a CRD without status.kopf pruned it
        ctx.handled[tr["metadata"]["uid"]] = handled  # kopf's own store of it is then skipped


async def _ensure_run(ctx: Context, views: Views, tr: dict[str, Any], attempt: int) -> dict[str, Any] | None:
    """Find or create the MLflow run: its status fields (written with the Job's, one patch for both); None when
    the run can never start (Failed)."""
    meta, spec = tr["metadata"], tr["spec"]
    # A namespace without a PowerSchedule has nothing to wait for; one with a PowerSchedule is asked fresh
    # (power.gate: its sleep protocol relies on a read from the API server).
    if ctx.platform_gate is not None and views.has_power_schedule(meta["namespace"]):
        waiting = await ctx.platform_gate(meta["namespace"])
        if waiting:
            await writes.write(ctx, tr, status.WAITING_FOR_PLATFORM, "WaitingForPlatform", waiting)
            raise kopf.TemporaryError(waiting, delay=PLATFORM_DELAY)
    tags = naming.run_tags(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                           job=naming.job_name(meta["name"]), image=spec["image"])
    # No run can exist for an empty status outside Context.maybe_created: skip the search. With several replicas
    # the attempt is also written before the create, so that any later one (after a crash) searches first.
    never_tried = not tr["status"] and meta["uid"] not in ctx.maybe_created
    if never_tried and not ctx.solo:
        await writes.write(ctx, tr, status.PENDING, "CreatingRun", "creating the MLflow run")
    ctx.maybe_created.add(meta["uid"])
    try:
        run, _ = await ctx.tracker.ensure_run(writes.uri(ctx, tr), spec["experiment"], meta["uid"], meta["name"], tags,
                                              search=not never_tried)
    except MlflowUnavailable as exc:
        ctx.metrics.mlflow_errors.inc()
        delay = ctx.settings.retry_delay(attempt)
        await writes.write(ctx, tr, status.PENDING, "MlflowUnavailable", f"{exc} (retrying in {delay:.0f}s)")
        raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except TrackingError as exc:
        await writes.finish(ctx, tr, status.FAILED, "MlflowError", str(exc))
        return None
    # Not written yet: after a crash before the Job's write, the next attempt searches MLflow for this run (by
    # UID) instead of making a second one.
    return {"mlflow": {"runId": run.run_id, "experimentId": run.experiment_id, "url": _run_url(ctx, tr, run)}}


async def _ensure_job(ctx: Context, tr: dict[str, Any], run_fields: dict[str, Any]) -> dict[str, Any] | None:
    """Create (or find) the Job: the status fields to write (its name and `run_fields`, the MLflow run's, in one
    patch); None when the API server refuses it for good (the run Failed)."""
    meta = tr["metadata"]
    run = run_fields.get("mlflow") or writes.run_ids(tr)
    manifest = jobs.build_job(tr, ctx.settings, jobs.MlflowIds(str(run["runId"]), str(run["experimentId"]),
                                                                writes.uri(ctx, tr)))
    service = indexed.build_service(manifest, jobs.owner_reference(tr))  # workers > 1: before its pods
    try:
        if service is not None:
            await ctx.kube.create_owned(SERVICES, service, meta["uid"])
        created = await ctx.kube.create_owned(JOBS, manifest, meta["uid"])
    except JobConflict as exc:
        await writes.write(ctx, tr, status.PENDING, "JobConflict", str(exc), **run_fields)
        raise kopf.TemporaryError(str(exc), delay=JOB_CONFLICT_DELAY) from exc
    except JobRejected as exc:
        # Refused for good: no retry can make the Job valid, so the run fails with the API server's reason.
        if not await writes.finish(ctx, tr, status.FAILED, "InvalidSpec",
                                   f"the API server refused the trainer Job: {exc}", **run_fields):
            # MLflow unreachable: the sweep follows no run without a Job, so the start handler tries again.
            raise kopf.TemporaryError(f"Job refused, MLflow unreachable: {exc}", delay=ctx.settings.retry_delay(0)) \
                from exc
        return None
    name = manifest["metadata"]["name"]
    if created:
        submitted = times.parse_time(meta.get("creationTimestamp"))
        if submitted:
            ctx.metrics.submit_to_job.observe(max(0.0, (ctx.clock() - submitted).total_seconds()))
    return {"jobName": name, **run_fields}


async def follow(ctx: Context, views: Views, namespace: str, name: str, *, with_progress: bool) -> None:
    """Bring the status up to date with the Job, its pods and (with_progress) the MLflow run."""
    key = _key(namespace, name)
    if not ctx.coalescer.enter(key, with_progress):
        return
    progress: bool | None = with_progress
    left: Left | None = None
    try:
        while progress is not None:
            left = await _follow_once(ctx, views, namespace, name, progress, left)
            if left is None:
                break  # ended or gone: a further pass would only read it again (the watch lags the write)
            progress = ctx.coalescer.again(key)
    finally:
        # After an error or an end: release the key (after an error, the next event or the sweep retries).
        while progress is not None:
            progress = ctx.coalescer.again(key)


# What a pass leaves the next one: its copy of the run after its writes, and the watched version it started from.
Left = tuple[dict[str, Any], str | None]


def _copy(ctx: Context, views: Views, namespace: str, name: str,
          left: Left | None) -> tuple[dict[str, Any] | None, str | None]:
    """The watched copy and its version; or the previous pass's own copy, as its write stored it, while the watch
    still shows what that pass started from (neither that write nor any later change yet). Taken as unconfirmed:
    a change by anyone else in the meantime fails the conditional write."""
    tr = views.run(namespace, name)
    watched = tr["metadata"].get("resourceVersion") if tr is not None else None
    if left is not None and tr is not None:
        own, basis = left
        version = own["metadata"].get("resourceVersion")
        if own["metadata"]["uid"] == tr["metadata"]["uid"] and watched == basis != version \
                and ctx.current(_key(namespace, name), version):
            return working_copy(own, confirmed=False), watched
    return tr, watched


async def _follow_once(ctx: Context, views: Views, namespace: str, name: str, with_progress: bool,
                       left: Left | None) -> Left | None:
    """One pass: what it leaves the next pass, None when the run is final (now or already) or gone."""
    async with ctx.locks.hold(_key(namespace, name)):
        tr, watched = _copy(ctx, views, namespace, name, left)
        if tr is not None and tr["metadata"]["uid"] in ctx.ended:
            return None  # the watch has not caught up with the final write yet
        if tr is not None:
            try:
                await _follow_step(ctx, views, tr, with_progress=with_progress)
                return None if writes.phase_of(tr) in status.TERMINAL_PHASES else (tr, watched)
            except (Conflict, writes.Stale):
                tr = await _fresh(ctx, namespace, name)
        if tr is None:
            ctx.forget_jobs_of(namespace, name)
            return None
        await _follow_step(ctx, views, tr, with_progress=with_progress)
        return None if writes.phase_of(tr) in status.TERMINAL_PHASES else (tr, watched)


async def _follow_step(ctx: Context, views: Views, tr: dict[str, Any], *, with_progress: bool) -> None:
    if tr["spec"].get("cancel"):
        await _cancel(ctx, views, tr)
    elif tr["status"].get("jobName"):
        await _follow(ctx, views, tr, with_progress=with_progress)


async def _job(ctx: Context, views: Views, tr: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The run's Job as watched; read from the API server when the watch has not shown it (yet)."""
    meta = tr["metadata"]
    return views.job(meta["uid"], name) or await ctx.kube.get(JOBS, meta["namespace"], name)


async def _follow(ctx: Context, views: Views, tr: dict[str, Any], *, with_progress: bool) -> None:
    meta, current = tr["metadata"], tr["status"]
    job_name = current["jobName"]
    job = await _job(ctx, views, tr, job_name)
    if job is None:
        # Gone: fine if its last known state was final (TTL deletion), else the run cannot end well.
        job = ctx.last_job(meta["uid"])
        if job is None or job["metadata"].get("name") != job_name or not status.job_finished(job):
            await writes.finish(ctx, tr, status.FAILED, "JobDeleted",
                                f"Job {job_name} was deleted before the run ended")
            return
    observed = await refusals.observe(ctx.kube, job, views.run_pods(meta["uid"]), meta["namespace"], ctx.clock(),
                                      ctx.limits)
    if observed.terminal:
        if writes.stale(ctx, tr):
            raise writes.Stale(meta["name"])
        if observed.phase == status.FAILED:
            # The failure's details (exit code, log tail) from the pods as stored: a watch may lag the Job's.
            pods = await refusals.run_pods(ctx.kube, meta["namespace"], meta["uid"])
            observed = await refusals.observe(ctx.kube, job, pods, meta["namespace"], ctx.clock(), ctx.limits)
        tagged = await outcome.image(ctx.tracker, tr, writes.uri(ctx, tr), observed.image_id)
        finished = await writes.finish(ctx, tr, observed.phase, observed.reason, observed.message,
                                       observed.start_time, observed.workers, **tagged)
        if finished:
            ctx.last_job(meta["uid"], forget=True)
        # After the status (else a retry would see the Job gone and lose the reason).
        if finished and observed.stop_job and \
                await ctx.kube.delete_owned(JOBS, meta["namespace"], job_name, meta["uid"]):
            writes.event(tr, "Normal", "JobDeleted", f"Job {job_name} deleted: {observed.reason} does not heal")
        return
    extra: dict[str, Any] = {"workers": observed.workers} if observed.workers else {}
    extra.update(await outcome.image(ctx.tracker, tr, writes.uri(ctx, tr), observed.image_id))
    if observed.start_time and not current.get("startTime"):
        extra["startTime"] = observed.start_time
    run_id = writes.run_ids(tr).get("runId")
    # Progress when asked, and with the write that enters Running: its first figures come with the phase, and a
    # progress pass writes nothing until they change.
    if observed.phase == status.RUNNING and run_id and (with_progress or current.get("phase") != status.RUNNING):
        extra.update(await outcome.progress(ctx.tracker, tr, writes.uri(ctx, tr), str(run_id)))
    await writes.write(ctx, tr, observed.phase, observed.reason, observed.message, **extra)


async def _cancel(ctx: Context, views: Views, tr: dict[str, Any]) -> None:
    """spec.cancel: stop the pods (Job deleted, pods removed in the background), then MLflow KILLED and
    phase Cancelled once no trainer runs any more (a trainer still starting could set RUNNING again)."""
    meta = tr["metadata"]
    job_name = naming.job_name(meta["name"])
    job = await _job(ctx, views, tr, job_name) if tr["status"].get("jobName") else None
    if job is not None and status.job_finished(job):
        await _follow(ctx, views, tr, with_progress=False)  # too late to cancel: record how the run really ended
        return
    if await ctx.kube.delete_owned(JOBS, meta["namespace"], job_name, meta["uid"]):
        writes.event(tr, "Normal", "JobDeleted", f"Job {job_name} deleted (cancel)")
    live = await refusals.live_pods(ctx.kube, tr)
    if live:
        # Pod deletion events (and the sweep) bring us back here.
        await writes.write(ctx, tr, writes.phase_of(tr) or status.PENDING, "Cancelling",
                           f"stopping pod {', '.join(live)}")
        return
    if not writes.run_ids(tr).get("runId"):
        await _adopt_run(ctx, tr)
    await writes.finish(ctx, tr, status.CANCELLED, "Cancelled", "cancelled (spec.cancel: true)")


async def _adopt_run(ctx: Context, tr: dict[str, Any]) -> None:
    """Find a run created just before a crash (its id never reached the status) so it gets closed too."""
    meta = tr["metadata"]
    try:
        run = await ctx.tracker.lookup_run(writes.uri(ctx, tr), tr["spec"]["experiment"], meta["uid"])
    except (MlflowUnavailable, TrackingError) as exc:
        logger.info("cannot look for the MLflow run of %s: %s", meta["name"], exc)
        return
    if run is not None:
        tr["status"]["mlflow"] = {"runId": run.run_id, "experimentId": run.experiment_id}


def seen(ctx: Context, tr: Mapping[str, Any]) -> None:
    """Count a TrainingRun in the per-phase gauge (at startup, before anything changes)."""
    ctx.metrics.set_phase(tr["metadata"]["uid"], writes.phase_of(tr) or status.PENDING)
