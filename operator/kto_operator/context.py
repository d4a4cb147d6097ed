"""The operator's long-lived state, shared by every handler through kopf's memo."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import naming, status, times
from .api import RUNS, Api
from .concurrency import Coalescer, KeyedLocks
from .metrics import Metrics
from .settings import OperatorSettings
from .tracking import Tracker

# From the power module (kto_operator.power.gate): namespace -> None when the platform (MLflow and its
# storage) is up, else why not. Runs wait in WaitingForPlatform until it says yes; the power daemon sees
# them as active and wakes the platform.
PlatformGate = Callable[[str], Awaitable["str | None"]]
# Seconds a run this replica ended is remembered (Context.ended): well beyond a watch's lag behind a write.
ENDED_MEMORY = 60.0


def run_key(namespace: str, name: str) -> str:
    """A TrainingRun's key in the per-run locks and the follow coalescer."""
    return f"{namespace}/{name}"


@dataclasses.dataclass
class Context:
    """Long-lived collaborators, built once in the startup handler and kept in kopf's memo."""

    settings: OperatorSettings
    kube: Api
    tracker: Tracker
    metrics: Metrics
    locks: KeyedLocks = dataclasses.field(default_factory=KeyedLocks)
    coalescer: Coalescer = dataclasses.field(default_factory=Coalescer)
    platform_gate: PlatformGate | None = None
    clock: Callable[[], datetime.datetime] = times.now
    # Final Job body seen in a watch event, per TrainingRun UID: with ttlSecondsAfterFinished=0 the Job
    # can be gone before it is read, but its final state was in the event. Only final states are kept
    # (nothing else is ever read back), without managedFields: the operator's memory must not grow with
    # the number of pending runs.
    # Touched by handlers on kopf's event loop only, never awaiting in between: no lock.
    last_jobs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # The resourceVersion of this operator's last status write, per live run (run_key): a watched copy at that
    # version is taken as current for a final step, without a read. Another replica's write may come from a
    # copy this one never saw, hence only when this replica is the only one (`solo`: no peering). A user's
    # write (cancel, delete) within the watch's lag is the accepted risk: the final status write, conditional
    # on that version, then fails and the run is read again; only its MLflow run was closed first.
    own_writes: dict[str, str] = dataclasses.field(default_factory=dict)
    solo: bool = True
    # UIDs of the runs this replica ended (final status written), with when: for ENDED_MEMORY, the watch may
    # still hand out the copy from before that write, and a follow of it would read the API server for nothing.
    ended: dict[str, datetime.datetime] = dataclasses.field(default_factory=dict)
    # kopf's diff base the start handler wrote with a JobCreated status, per UID, until kopf's store of it
    # (diffbase.StatusDiffBase, which shares this dict) skips it.
    handled: dict[str, str] = dataclasses.field(default_factory=dict)
    # UIDs of the runs whose MLflow run may exist although their status names none: those whose status named none
    # when this process started (`unrecorded`: an earlier process may have created it and died before its
    # write), and those this process set out to create one for. A run with an empty status outside this set was
    # created since, and a replica alone (`solo`) is the only one that may have acted on it: no run to search.
    maybe_created: set[str] = dataclasses.field(default_factory=set)

    def wrote(self, key: str, uid: str, version: str | None, final: bool) -> None:
        """Note a status write of run `key`; a final one ends what is kept for it but a short memory."""
        if version is None or final:
            self.own_writes.pop(key, None)
        else:
            self.own_writes[key] = version
        if final:
            self.maybe_created.discard(uid)
            now = self.clock()
            self.ended.pop(uid, None)
            self.ended[uid] = now
            for old, at in list(self.ended.items()):  # oldest first (insertion order)
                if (now - at).total_seconds() <= ENDED_MEMORY:
                    break
                del self.ended[old]

    def current(self, key: str, version: str | None) -> bool:
        """True when a watched copy at `version` is the one this replica's last write stored."""
        return self.solo and version is not None and self.own_writes.get(key) == version

    def remember_job(self, job: Mapping[str, Any]) -> None:
        uid = (job.get("metadata", {}).get("labels") or {}).get(naming.LABEL_TRAININGRUN_UID)
        if uid and status.job_finished(job):
            meta = {k: v for k, v in job["metadata"].items() if k != "managedFields"}
            self.last_jobs[uid] = {**job, "metadata": meta}

    def forget_jobs_of(self, namespace: str, name: str) -> None:
        """Drop what is kept for a run that is gone or final: the garbage collector deletes its Job after
        the finalizer ran, and that DELETED event would otherwise stay here for good (one Job per run)."""
        self.own_writes.pop(run_key(namespace, name), None)
        for uid, job in list(self.last_jobs.items()):
            meta = job["metadata"]
            if meta.get("namespace") == namespace and \
                    (meta.get("annotations") or {}).get(naming.ANNOTATION_TRAININGRUN) == name:
                del self.last_jobs[uid]

    def last_job(self, uid: str, forget: bool = False) -> dict[str, Any] | None:
        return self.last_jobs.pop(uid, None) if forget else self.last_jobs.get(uid)

    @property
    def limits(self) -> status.Limits:
        s = self.settings
        return status.Limits(s.fail_fast_seconds, s.log_tail_lines, s.message_max_chars)


async def unrecorded(kube: Api, namespace: str | None) -> set[str]:
    """UIDs of the TrainingRuns (of `namespace`, None: all) whose status names no MLflow run: Context.maybe_created
    at start. Not only an empty status: kopf's own record of a failed start (status.kopf) is no trace of ours."""
    runs = await kube.list(RUNS, namespace)
    return {tr["metadata"]["uid"] for tr in runs if not ((tr.get("status") or {}).get("mlflow") or {}).get("runId")}
