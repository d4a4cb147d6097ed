"""What the operator's watches already hold (kopf indexes): the live TrainingRuns, their Jobs and pods, the
namespaces with a PowerSchedule. A follow reads these instead of asking the API server again; only a decision
that cannot be undone (closing the MLflow run, failing a run) reads the API server first."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from . import naming, status

# Marks a TrainingRun copied from a watch: it may be behind the API server by one event, so its status
# write carries its resourceVersion (a 409 then says: read it again).
UNCONFIRMED = "_unconfirmed"

# Compact JSON (C encoder): an entry's text is a fraction of the memory of the same object as dicts.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)

Index = Mapping[Any, Iterable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """A watched object as an index keeps it: its name, and the object as JSON text, decoded afresh by each
    reader. Text shares nothing with the watch event (an entry holding the event's dicts would keep the whole
    event alive), and a reader may change its copy at will."""

    name: str
    text: str = dataclasses.field(repr=False)

    def body(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.text)
        return decoded


@dataclasses.dataclass(frozen=True, slots=True)
class RunEntry(Stored):
    """A live TrainingRun: with the fields the sweep reads each second for every run, so that it never decodes."""

    namespace: str
    uid: str
    phase: str | None
    reason: str | None
    job_name: str | None
    cancel: bool


def slim(body: Mapping[str, Any], leave_out: Mapping[str, Iterable[str]] = {}) -> str:
    """A watched object's JSON text as kept in an index: without managedFields (the larger half of most
    objects), nor the fields of `leave_out` (top-level key -> its keys to drop)."""
    drop = {"metadata": {"managedFields"}, **{k: set(v) for k, v in leave_out.items()}}
    return _ENCODER.encode({k: {f: v for f, v in part.items() if f not in drop[k]}
                            if k in drop and isinstance(part, Mapping) else part
                            for k, part in body.items()})


# kopf's copy of the last handled spec, as a JSON string, in the annotation an older operator wrote (now in
# status.kopf, also left out of the entries): never read by a follow.
LAST_HANDLED = f"{naming.KOPF_PREFIX}/last-handled-configuration"


def run_entry(body: Mapping[str, Any]) -> dict[tuple[str, str], RunEntry]:
    """Index entry of a TrainingRun a follow may act on: not final, not being deleted (finalize reads fresh).
    Empty for any other: kopf keeps an object's previous entry when its index function returns None, and only
    an empty result removes it."""
    meta = body.get("metadata") or {}
    current = body.get("status") or {}
    if meta.get("deletionTimestamp") or current.get("phase") in status.TERMINAL_PHASES:
        return {}
    annotations = meta.get("annotations") or {}
    kept = body
    if LAST_HANDLED in annotations:
        others = {k: v for k, v in annotations.items() if k != LAST_HANDLED}
        kept = {**body, "metadata": {**meta, "annotations": others}}
    text = slim(kept, leave_out={"status": ("kopf",)})
    entry = RunEntry(name=meta["name"], text=text, namespace=meta["namespace"], uid=meta.get("uid") or "",
                     phase=current.get("phase"), reason=current.get("reason"), job_name=current.get("jobName"),
                     cancel=bool((body.get("spec") or {}).get("cancel")))
    return {(meta["namespace"], meta["name"]): entry}


def _uid_of_run(body: Mapping[str, Any]) -> str | None:
    return ((body.get("metadata") or {}).get("labels") or {}).get(naming.LABEL_TRAININGRUN_UID)


def stored_pod(body: Mapping[str, Any]) -> Stored:
    return Stored(body["metadata"]["name"], slim(body))


def stored_job(body: Mapping[str, Any]) -> Stored:
    """A Job without its pod template (the pods are watched themselves): a follow reads the Job's status,
    metadata and scalar spec fields only."""
    return Stored(body["metadata"]["name"], slim(body, leave_out={"spec": ("template",)}))


def child_entry(body: Mapping[str, Any]) -> dict[str, Stored] | None:
    """Index entry of a pod of ours: under the UID of its TrainingRun."""
    uid = _uid_of_run(body)
    return {uid: stored_pod(body)} if uid else None


def job_entry(body: Mapping[str, Any]) -> dict[str, Stored] | None:
    """Index entry of a Job of ours: under the UID of its TrainingRun."""
    uid = _uid_of_run(body)
    return {uid: stored_job(body)} if uid else None


def power_entry(body: Mapping[str, Any]) -> dict[str, str]:
    meta = body.get("metadata") or {}
    return {meta["namespace"]: meta["name"]}


def working_copy(body: Mapping[str, Any], confirmed: bool) -> dict[str, Any]:
    """A TrainingRun the reconciler may update in place (its status and resourceVersion), `body` untouched."""
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
        """The TrainingRun as last watched (an unconfirmed copy), None when it is final, being deleted or gone."""
        found: RunEntry | None = _first(self.runs, (namespace, name))
        return working_copy(found.body(), confirmed=False) if found is not None else None

    def job(self, uid: str, name: str) -> dict[str, Any] | None:
        return next((j.body() for j in self.jobs.get(uid) or () if j.name == name), None)

    def run_pods(self, uid: str) -> list[dict[str, Any]]:
        return [p.body() for p in self.pods.get(uid) or ()]

    def has_power_schedule(self, namespace: str) -> bool:
        return bool(_first(self.powers, namespace))
