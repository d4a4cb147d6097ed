"""Deletion of a TrainingRun (kopf's finalizer): stop its pods, then close its MLflow run as KILLED."""

from __future__ import annotations

import kopf

from . import naming, outcome, refusals, status, writes
from .api import JOBS, RUNS
from .context import Context, run_key
from .tracking import MlflowUnavailable, TrackingError

POD_STOP_DELAY = 1.0


async def finalize(ctx: Context, namespace: str, name: str, attempt: int, elapsed: float) -> None:
    """Deletion: stop the pods, then mark the MLflow run KILLED (not before: a trainer still starting could
    set it RUNNING again). Retried until settings.delete_timeout, then the object goes anyway."""
    key = run_key(namespace, name)
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
        uri = writes.uri(ctx, tr)
        if tr["status"].get("phase") not in status.TERMINAL_PHASES:
            try:
                run_id = writes.run_ids(tr).get("runId")
                if not run_id:
                    found = await ctx.tracker.lookup_run(uri, tr["spec"]["experiment"], meta["uid"])
                    run_id = found.run_id if found else None
                if run_id:
                    closed = await ctx.tracker.terminate(uri, str(run_id), "KILLED",
                                                         params=outcome.parameters(tr["spec"]))
                    if closed.params_refused:
                        writes.event(tr, "Warning", "MlflowError", f"MLflow refused params: {closed.params_refused}")
            except MlflowUnavailable as exc:
                ctx.metrics.mlflow_errors.inc()
                if left > 0:
                    delay = min(ctx.settings.retry_delay(attempt), max(left, 1.0))
                    raise kopf.TemporaryError(str(exc), delay=delay) from exc
                writes.event(tr, "Warning", "MlflowUnavailable",
                             f"MLflow unreachable for {elapsed:.0f}s; its run is left as is: {exc}")
            except TrackingError as exc:
                writes.event(tr, "Warning", "MlflowError", str(exc))
        ctx.metrics.set_phase(meta["uid"], None)
        ctx.last_job(meta["uid"], forget=True)
        ctx.wrote(key, meta["uid"], None, final=True)
        ctx.handled.pop(meta["uid"], None)
