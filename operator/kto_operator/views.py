"""What the operator's watches already hold (kopf indexes): the live TrainingRuns, their Jobs and pods, the
namespaces with a PowerSchedule. A follow reads these instead of asking the API server again; only a decision
that cannot be undone (closing the MLflow run, failing a run) reads the API server first."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from . import naming, status

# Marks a TrainingRun copied from a watch: it may be behind the API server by one event, so its status
# write carries its resourceVersion (a 409 then says: read it again).
UNCONFIRMED = "_unconfirmed"

Index = Mapping[Any, Iterable[Any]]


def _own(value: Any) -> Any:
    """A copy of a watched object's part that shares nothing with the watch event, its keys interned: an index
    entry that kept the event's own dicts would keep that whole event alive (managedFields included), and each
    event brings its own copy of every key name ("metadata", "creationTimestamp"...), once per object."""
    if isinstance(value, Mapping):
        return {sys.intern(k) if type(k) is str else k: _own(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_own(v) for v in value]
    return value


def slim(body: Mapping[str, Any], leave_out: Mapping[str, Iterable[str]] = {}) -> dict[str, Any]:
    """A watched object as kept in an index (its own copy, see `_own`): without managedFields (the larger half
    of most objects), nor the fields of `leave_out` (top-level key -> its keys to drop)."""
    drop = {"metadata": {"managedFields"}, **{k: set(v) for k, v in leave_out.items()}}
    return {sys.intern(k): _own({f: v for f, v in part.items() if f not in drop[k]}
                                if k in drop and isinstance(part, Mapping) else part)
            for k, part in body.items()}


# kopf's copy of the last handled spec, as a JSON string, in the annotation an older operator wrote (now in
# status.kopf, also left out of the entries): never read by a follow.
LAST_HANDLED = f"{naming.KOPF_PREFIX}/last-handled-configuration"


def run_entry(body: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Index entry of a TrainingRun a follow may act on: not final, not being deleted (finalize reads fresh).
    Empty for any other: kopf keeps an object's previous entry when its index function returns None, and only
    an empty result removes it."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or (body.get("status") or {}).get("phase") in status.TERMINAL_PHASES:
        return {}
    entry = slim(body, leave_out={"status": ("kopf",)})
    annotations = entry["metadata"].get("annotations")
    if annotations and LAST_HANDLED in annotations:
        del annotations[LAST_HANDLED]  # the entry's own copy
    return {(meta["namespace"], meta["name"]): entry}


def child_entry(body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Index entry of a pod of ours: under the UID of its TrainingRun."""
    uid = ((body.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_TRAININGRUN_UID)
    return {uid: slim(body)} if uid else None


def job_entry(body: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Index entry of a Job of ours, without its pod template (the pods are watched themselves): a follow reads
    the Job's status, metadata and scalar spec fields only."""
    uid = ((body.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_TRAININGRUN_UID)
    return {uid: slim(body, leave_out={"spec": ("template",)})} if uid else None


def power_entry(body: Mapping[str, Any]) -> dict[str, str]:
    meta = body.get("metadata") or {}
    return {meta["namespace"]: meta["name"]}


def working_copy(body: Mapping[str, Any], confirmed: bool) -> dict[str, Any]:
    """A TrainingRun the reconciler may update in place (its status and resourceVersion), the index untouched."""
    tr = {**body, "metadata": dict(body["metadata"]), "status": dict(body.get("status") or {})}
    if not confirmed:
        tr[UNCONFIRMED] = True
    return tr


def _first(index: Index, key: Any) -> Any:
    return next(iter(index.get(key) or ()), None)


@dataclasses.dataclass(frozen=True)
class Views:
    """kopf's indexes, as handed to the handlers (empty ones in unit tests)."""

    runs: Index = dataclasses.field(default_factory=dict)
    jobs: Index = dataclasses.field(default_factory=dict)
    pods: Index = dataclasses.field(default_factory=dict)
    powers: Index = dataclasses.field(default_factory=dict)

    def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The TrainingRun as last watched, None when it is final, being deleted or gone."""
        found = _first(self.runs, (namespace, name))
        return working_copy(found, confirmed=False) if found is not None else None

    def job(self, uid: str, name: str) -> Mapping[str, Any] | None:
        return next((j for j in self.jobs.get(uid) or () if j["metadata"].get("name") == name), None)

    def run_pods(self, uid: str) -> list[Mapping[str, Any]]:
        return list(self.pods.get(uid) or ())

    def has_power_schedule(self, namespace: str) -> bool:
        return bool(_first(self.powers, namespace))
