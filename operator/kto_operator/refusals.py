"""Why a Job has no trainer pod when the API server refused to create it: a ResourceQuota (`exceeded quota`),
a LimitRange, Pod Security. The Job controller says so only in the Job's Events (FailedCreate) and retries
by itself with back-off, so the run stays Pending with the refusal as its reason until the pod exists."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import naming, status, times, workers
from .api import EVENTS, PODS, Api

QUOTA_EXCEEDED = "QuotaExceeded"
POD_REFUSED = "PodRefused"
REASONS = frozenset({QUOTA_EXCEEDED, POD_REFUSED})
# A Job normally has its pod within a second: only a Job older than this has its Events read, so that a burst
# of new Jobs costs no extra API calls.
CHECK_AFTER_SECONDS = 5.0


def _when(event: Mapping[str, Any]) -> str:
    # RFC 3339 times in UTC compare as text; eventTime has microseconds, the others whole seconds.
    return str(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp") or "")


def refusal(events: Iterable[Mapping[str, Any]]) -> status.Observation | None:
    """The newest FailedCreate Event of a Job as a Pending observation, else None."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    message = str(max(failed, key=_when).get("message") or "the trainer pod was refused")
    reason = QUOTA_EXCEEDED if "exceeded quota" in message else POD_REFUSED
    return status.Observation(status.PENDING, reason, f"the Job cannot create the trainer pod: {message}")


async def run_pods(kube: Api, namespace: str, uid: str) -> list[dict[str, Any]]:
    """The trainer pods of TrainingRun `uid` (by label: pods of an older Job never match)."""
    return await kube.list(PODS, namespace, labels={naming.LABEL_TRAININGRUN_UID: uid})


async def live_pods(kube: Api, tr: Mapping[str, Any]) -> list[str]:
    """Names of the run's pods whose trainer may still be running (neither Succeeded nor Failed)."""
    meta = tr["metadata"]
    return [p["metadata"]["name"] for p in await run_pods(kube, meta["namespace"], meta["uid"])
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


async def observe(kube: Api, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], namespace: str,
                  now: datetime.datetime, limits: status.Limits) -> status.Observation:
    """workers.observe of the Job and the run's pods; for a Job that has had time to make its pod and has none,
    what its Events say (the server selects the Job's own: involvedObject.uid)."""
    observed = workers.observe(job, pods, now, limits)
    if observed.reason != status.NO_POD:
        return observed
    created = times.parse_time(job["metadata"].get("creationTimestamp"))
    if created is None or (now - created).total_seconds() < CHECK_AFTER_SECONDS:
        return observed
    events = await kube.list(EVENTS, namespace, fields={"involvedObject.uid": job["metadata"]["uid"]})
    return refusal(events) or observed
