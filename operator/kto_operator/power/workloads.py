"""Which workloads a PowerSchedule manages, and the patches that put them to sleep and wake them.

Everything here works on plain dicts (the API's JSON, camelCase) so it is unit-tested without a
cluster. The prior value is saved on the object itself, so a wake after an operator restart (or after
the PowerSchedule was re-created) still restores it exactly. The value we set is saved too: at wake,
a workload whose value no longer equals it was changed by a person while asleep and is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kto_operator.naming import ANNOTATION_SAVED_REPLICAS as SAVED_REPLICAS
from kto_operator.naming import ANNOTATION_SAVED_SUSPEND as SAVED_SUSPEND
from kto_operator.naming import ANNOTATION_SET_REPLICAS as SET_REPLICAS
from kto_operator.naming import ANNOTATION_SET_SUSPEND as SET_SUSPEND
from kto_operator.naming import ANNOTATION_SLEPT_AT as SLEPT_AT
from kto_operator.naming import ANNOTATION_SLEPT_BY as SLEPT_BY
from kto_operator.naming import LABEL_DAILYCLEAN, LABEL_NAME, OPERATOR_NAME

DEPLOYMENT = "Deployment"
STATEFULSET = "StatefulSet"
CRONJOB = "CronJob"
KINDS = (STATEFULSET, DEPLOYMENT, CRONJOB)  # also the wake order

# The annotations written on each slept workload, all removed at wake.
OURS = (SAVED_REPLICAS, SET_REPLICAS, SAVED_SUSPEND, SET_SUSPEND, SLEPT_BY, SLEPT_AT)


def matches(labels: Mapping[str, str], selector: Mapping[str, Any] | None) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions); empty selects all."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class Selection:
    selector: Mapping[str, Any] | None = None
    exclude: tuple[Mapping[str, Any], ...] = ()
    operator_deployment: str | None = None  # an extra name to protect (env KTO_OPERATOR_DEPLOYMENT)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], operator_deployment: str | None = None) -> Selection:
        return cls(spec.get("selector") or None, tuple(spec.get("exclude") or ()), operator_deployment)


def exclusion(kind: str, obj: Mapping[str, Any], sel: Selection) -> str | None:
    """Why this workload is not managed, or None when it is."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if kind == DEPLOYMENT and (
        labels.get(LABEL_NAME) == OPERATOR_NAME or meta.get("name") == sel.operator_deployment
    ):
        return "the operator itself"
    if str(labels.get(LABEL_DAILYCLEAN, "")).lower() == "false":
        return f"labelled {LABEL_DAILYCLEAN}=false"
    if not matches(labels, sel.selector):
        return "not selected by spec.selector"
    for i, ex in enumerate(sel.exclude):
        if ex and matches(labels, ex):
            return f"matched spec.exclude[{i}]"
    return None


def managed(kind: str, objs: Iterable[Mapping[str, Any]], sel: Selection) -> list[Mapping[str, Any]]:
    return [o for o in objs if exclusion(kind, o, sel) is None]


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def asleep_by_us(obj: Mapping[str, Any]) -> bool:
    ann = _annotations(obj)
    return SAVED_REPLICAS in ann or SAVED_SUSPEND in ann


def replicas(obj: Mapping[str, Any]) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)  # the API's default


def _rv(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def sleep_patch(kind: str, obj: Mapping[str, Any], owner: str, now_iso: str) -> dict[str, Any] | None:
    """The merge patch that puts a workload to sleep, or None (already asleep, or nothing to save).

    The patch carries the resourceVersion it was computed from: a concurrent edit makes it fail with
    409 instead of saving a stale value.
    """
    if asleep_by_us(obj):
        return None
    meta: dict[str, Any] = {"resourceVersion": _rv(obj)}
    if kind == CRONJOB:
        if (obj.get("spec") or {}).get("suspend"):
            return None  # already suspended by someone: leave it as it is
        meta["annotations"] = {SAVED_SUSPEND: "false", SET_SUSPEND: "true", SLEPT_BY: owner, SLEPT_AT: now_iso}
        return {"metadata": meta, "spec": {"suspend": True}}
    n = replicas(obj)
    if n == 0:
        return None  # already at zero: a wake must not bring it up
    meta["annotations"] = {SAVED_REPLICAS: str(n), SET_REPLICAS: "0", SLEPT_BY: owner, SLEPT_AT: now_iso}
    return {"metadata": meta, "spec": {"replicas": 0}}


@dataclass(frozen=True)
class WakeAction:
    patch: dict[str, Any]
    restored: bool  # False: a person changed it while asleep, their value is kept
    detail: str


def wake_action(kind: str, obj: Mapping[str, Any]) -> WakeAction | None:
    """The merge patch that wakes a workload we put to sleep, or None if it is not ours."""
    if not asleep_by_us(obj):
        return None
    ann = _annotations(obj)
    name = (obj.get("metadata") or {}).get("name")
    meta: dict[str, Any] = {"resourceVersion": _rv(obj), "annotations": dict.fromkeys(OURS)}
    if kind == CRONJOB:
        suspend = bool((obj.get("spec") or {}).get("suspend"))
        if str(suspend).lower() != ann.get(SET_SUSPEND, "true"):
            return WakeAction({"metadata": meta}, False, f"{kind}/{name}: resumed by hand while asleep, kept")
        saved = ann.get(SAVED_SUSPEND, "false") == "true"
        return WakeAction({"metadata": meta, "spec": {"suspend": saved}}, True, f"{kind}/{name}: resumed")
    current = replicas(obj)
    try:
        saved_n, set_n = int(ann[SAVED_REPLICAS]), int(ann.get(SET_REPLICAS, "0"))
    except (KeyError, ValueError):
        return WakeAction({"metadata": meta}, False, f"{kind}/{name}: unreadable {SAVED_REPLICAS}, left as is")
    if current != set_n:
        return WakeAction(
            {"metadata": meta}, False, f"{kind}/{name}: scaled to {current} by hand while asleep, kept"
        )
    return WakeAction(
        {"metadata": meta, "spec": {"replicas": saved_n}}, True, f"{kind}/{name}: {set_n} -> {saved_n}"
    )


def ready(kind: str, obj: Mapping[str, Any]) -> bool:
    """Scaled workload has all its replicas ready for the current generation (CronJobs always are)."""
    if kind == CRONJOB:
        return True
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    want = replicas(obj)
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False
    return int(status.get("readyReplicas") or 0) >= want and int(status.get("replicas") or 0) >= want


def saved_entry(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A status.workloads entry for a workload asleep by us."""
    ann = _annotations(obj)
    entry: dict[str, Any] = {"kind": kind, "name": obj["metadata"]["name"]}
    if kind == CRONJOB:
        entry["savedSuspend"] = ann.get(SAVED_SUSPEND) == "true"
    else:
        entry["savedReplicas"] = int(ann.get(SAVED_REPLICAS, "0"))
    return entry


def status_workloads(by_kind: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    return [saved_entry(k, o) for k in KINDS for o in by_kind.get(k, ()) if asleep_by_us(o)]
