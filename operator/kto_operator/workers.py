"""The run's phase when it trains on several pods (an Indexed Job, see indexed), and its workers ready/total.

Pure, like `status`: the Job's own conclusions (Complete, Failed, FailureTarget, Suspended) stand; while it
runs, every worker counts (the run trains only once all have started), and a failure names its worker.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from . import indexed, status

WORKERS_STARTING = "WorkersStarting"
SIGTERM_EXIT = 143
# What the operator's final MLflow status overwrites for a run of several workers (see mlflow_overrides).
_STOPPED = frozenset({"KILLED", "FAILED"})


def job_workers(job: Mapping[str, Any]) -> int:
    spec = job.get("spec") or {}
    return int(spec.get("completions") or 1) if spec.get("completionMode") == "Indexed" else 1


def worker_index(pod: Mapping[str, Any]) -> int:
    """The pod's completion index (0 for a plain Job's pod)."""
    annotations = pod["metadata"].get("annotations") or {}
    try:
        return int(annotations.get(indexed.COMPLETION_INDEX_ANNOTATION, 0))
    except ValueError:
        return 0


def newest_by_worker(pods: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Each worker's newest pod (an index's older pods are ones the Job controller replaced)."""
    found: dict[int, Mapping[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        found[worker_index(pod)] = pod
    return found


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return (status.trainer_status(pod).get("state") or {}).get("terminated") or {}


def ready(pods: Sequence[Mapping[str, Any]]) -> int:
    """Workers whose trainer runs or has finished successfully."""
    count = 0
    for pod in newest_by_worker(pods).values():
        state = status.trainer_status(pod).get("state") or {}
        if state.get("running") or (state.get("terminated") or {}).get("exitCode") == 0:
            count += 1
    return count


def first_failure(pods: Sequence[Mapping[str, Any]], limits: status.Limits) -> tuple[str, str] | None:
    """(reason, message) of the worker that failed first, named: the others failed because it did (the Job
    controller stops them, or their collectives lost a peer)."""
    failed = []
    for pod in pods:
        found = status.failure_from_pods([pod], limits)
        if found:
            ended = _terminated(pod)
            # finishedAt has whole seconds: within one, a worker that was sent SIGTERM (143) was stopped.
            failed.append(((ended.get("finishedAt") or "~", ended.get("exitCode") == SIGTERM_EXIT), pod, found))
    if not failed:
        return None
    _, pod, (reason, message) = min(failed, key=lambda item: item[0])
    return reason, f"worker {worker_index(pod)} (pod {pod['metadata'].get('name', '')}): {message}"


def _observe_running(pods: Sequence[Mapping[str, Any]], total: int, now: datetime.datetime,
                     limits: status.Limits) -> status.Observation:
    """No Job conclusion yet: the workers' own states."""
    newest = newest_by_worker(pods)
    seen = {index: status.observe_pod(pod, now, limits) for index, pod in sorted(newest.items())}
    # A worker that cannot start (image, configuration, scheduling) explains the whole run.
    for phase in (status.FAILED, status.PENDING):
        for index, observed in seen.items():
            if observed.phase == phase and observed.reason != "PodPending":
                return dataclasses.replace(observed, message=f"worker {index}: {observed.message}")
    started = [o for o in seen.values() if o.phase == status.RUNNING]
    if len(started) < total:
        return status.Observation(status.PENDING, WORKERS_STARTING,
                                  f"{len(started)} of {total} workers started")
    start = min((o.start_time for o in started if o.start_time), default=None)
    running = sum(o.reason == "Running" for o in started)
    if not running:
        return status.Observation(status.RUNNING, "PodTerminated", f"all {total} workers ended", start_time=start)
    done = f", {total - running} finished" if running < total else ""
    return status.Observation(status.RUNNING, "Running", f"{running} of {total} workers running{done}",
                              start_time=start)


def observe(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime.datetime,
            limits: status.Limits) -> status.Observation:
    """status.observe for any number of workers, with `workers` = "ready/total"."""
    total = job_workers(job)
    observed = status.observe(job, pods, now, limits)
    if total > 1:
        conditions = status.true_conditions(job)
        failure = first_failure(pods, limits)
        if observed.phase == status.FAILED and observed.reason != "DeadlineExceeded" and failure:
            observed = dataclasses.replace(observed, reason=failure[0], message=failure[1])
        elif "FailureTarget" in conditions and failure:
            observed = dataclasses.replace(observed, message=f"{failure[1]}\nstopping the other workers")
        elif not conditions.keys() & {*status.FINAL_JOB_CONDITIONS, "FailureTarget", "Suspended"} and pods:
            observed = dataclasses.replace(_observe_running(pods, total, now, limits), image_id=observed.image_id)
    return dataclasses.replace(observed, workers=f"{ready(pods)}/{total}")


def mlflow_overrides(spec: Mapping[str, Any], phase: str) -> frozenset[str]:
    """MLflow statuses the operator's final one replaces (status.MLFLOW_STATUS[phase]).

    One worker: none, the trainer's own status stands. Several: when one worker fails, the Job controller stops
    worker 0, which ends the MLflow run KILLED as any stopped trainer does; and on cancel, worker 0 may see its
    collectives fail (a peer stopped first) and end it FAILED. Only the operator sees the whole run, so for a
    Failed or Cancelled run its FAILED or KILLED stands."""
    if indexed.workers(spec) > 1 and phase in (status.FAILED, status.CANCELLED):
        return _STOPPED
    return frozenset()
