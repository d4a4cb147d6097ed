"""The platform's ON/OFF switch without a CRD (Sandbox mode): the pure part of `python -m kto_operator.power`.

Where no CRD can be installed (the OpenShift Developer Sandbox) there is no PowerSchedule to hold a status,
so the command keeps its record in a ConfigMap (`kto-power`): state, reason, what it put to sleep, and the
replica counts last seen awake. The exact values to restore live, as with the operator, on each slept
workload (the kto.dev/ annotations of `workloads`): the sleep and wake patches are the operator's own.

Everything here works on plain dicts (the API's JSON) with the time as an argument, unit-tested without a
cluster; `cli` does the API calls and the waiting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kto_operator import naming
from kto_operator.power import workloads
from kto_operator.power.workloads import CRONJOB, Selection, WakeAction

# The command's own CronJobs carry this label: it never suspends them (the off CronJob would otherwise
# suspend the on CronJob, and the platform would never wake again).
OWN_LABEL = (naming.LABEL_NAME, naming.POWER_SWITCH_NAME)
# Trainer Jobs, the operator's and manifests/sandbox/training's alike: a sleep waits for them to end.
TRAINER_LABEL = (naming.LABEL_COMPONENT, naming.COMPONENT)

# Exit codes of the command (besides argparse's 2): a sleep deferred by a running training, an API error.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DEFERRED = 3

# ConfigMap record: reasons (the states are schedule.ON/OFF/WAKING_UP/GOING_TO_SLEEP).
SWITCHED = "Switched"
SLEEP_DEFERRED = "SleepDeferred"
WAKE_TIMEOUT = "WakeTimeout"
FAILED = "Failed"

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


class SelectorError(ValueError):
    """A label selector the command cannot read (it says which part)."""


def _split_requirements(text: str) -> list[str]:
    """Commas separate requirements, except inside the parentheses of `in (a, b)`."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
        if depth < 0:
            raise SelectorError(f"{text!r}: unbalanced parentheses")
    if depth:
        raise SelectorError(f"{text!r}: unbalanced parentheses")
    parts.append(current)
    return [p.strip() for p in parts]


def _key(key: str, requirement: str) -> str:
    if not _KEY.match(key):
        raise SelectorError(f"{requirement!r}: {key!r} is not a label key")
    return key


def _value(value: str, requirement: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"{requirement!r}: {value!r} is not a label value")
    return value


def parse_selector(text: str) -> dict[str, Any] | None:
    """kubectl's label selector syntax (`a=b,c!=d,e in (f,g),h,!i`) as a LabelSelector dict; "" selects all."""
    if not text.strip():
        return None
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for req in _split_requirements(text):
        if not req:
            raise SelectorError(f"{text!r}: empty requirement")
        if m := _SET.match(req):
            values = [_value(v.strip(), req) for v in m.group(3).split(",")]
            op = "In" if m.group(2) == "in" else "NotIn"
            expressions.append({"key": _key(m.group(1), req), "operator": op, "values": values})
        elif "!=" in req:
            key, _, value = req.partition("!=")
            expressions.append({"key": _key(key.strip(), req), "operator": "NotIn",
                                "values": [_value(value.strip(), req)]})
        elif "=" in req:
            key, _, value = req.replace("==", "=", 1).partition("=")
            labels[_key(key.strip(), req)] = _value(value.strip(), req)
        elif req.startswith("!"):
            expressions.append({"key": _key(req[1:].strip(), req), "operator": "DoesNotExist"})
        else:
            expressions.append({"key": _key(req, req), "operator": "Exists"})
    selector: dict[str, Any] = {}
    if labels:
        selector["matchLabels"] = labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def selection(selector: str = "", exclude: Sequence[str] = (), operator_deployment: str | None = None) -> Selection:
    """What the command manages: the selector's workloads minus the excluded ones, its own CronJobs, the
    operator's Deployment and anything labelled axa.com/dailyclean=false (workloads.exclusion)."""
    own = {"matchLabels": {OWN_LABEL[0]: OWN_LABEL[1]}}
    excluded = tuple(s for s in (parse_selector(e) for e in exclude) if s)
    return Selection(parse_selector(selector), (*excluded, own), operator_deployment)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))


def key(kind: str, obj: Mapping[str, Any]) -> str:
    """`Deployment/mlflow`: how the record names a workload."""
    return f"{kind}/{_name(obj)}"


# Trainings ------------------------------------------------------------------------------------------------
def job_finished(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def active_trainers(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Trainer Jobs that have not finished (a suspended one is not running: it does not hold the platform)."""
    found = []
    for job in jobs:
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(TRAINER_LABEL[0]) != TRAINER_LABEL[1] or (job.get("spec") or {}).get("suspend"):
            continue
        if not job_finished(job) and not (job.get("metadata") or {}).get("deletionTimestamp"):
            found.append(_name(job))
    return sorted(found)


# The record -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """The ConfigMap's data: what a PowerSchedule's status says, as strings (ConfigMap values are strings)."""

    state: str = ""  # On | GoingToSleep | Off | WakingUp; "" before the first switch
    reason: str = ""
    message: str = ""
    last_transition: str = ""
    # What this switch put to sleep: status.workloads entries ({kind, name, savedReplicas | savedSuspend}).
    workloads: tuple[Mapping[str, Any], ...] = ()
    # Replica counts last seen awake ("Deployment/mlflow": 1): what --revive brings back.
    awake: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, str] | None) -> Record:
        """A record from a ConfigMap's data; unreadable JSON counts as empty (the annotations stay the truth)."""
        data = data or {}

        def loads(text: str | None, default: Any) -> Any:
            try:
                value = json.loads(text or "")
            except ValueError:
                return default
            return value if isinstance(value, type(default)) else default

        awake = {str(k): int(v) for k, v in loads(data.get("awake"), {}).items() if isinstance(v, int)}
        return cls(data.get("state", ""), data.get("reason", ""), data.get("message", ""),
                   data.get("lastTransition", ""), tuple(loads(data.get("workloads"), [])), awake)

    def to_data(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason, "message": self.message,
                "lastTransition": self.last_transition,
                "workloads": json.dumps(list(self.workloads), sort_keys=True),
                "awake": json.dumps(dict(sorted(self.awake.items())))}


def configmap(name: str, record: Record) -> dict[str, Any]:
    """The ConfigMap created at the first switch (labelled like the command's CronJobs)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {OWN_LABEL[0]: OWN_LABEL[1]}}, "data": record.to_data()}


# Replica counts -------------------------------------------------------------------------------------------------
def idled(kind: str, objs: Iterable[Mapping[str, Any]], awake: Mapping[str, int]) -> list[tuple[str, int]]:
    """Managed workloads at 0 that this switch did not put to sleep but recorded awake: scaled down by someone
    else since (the Developer Sandbox's idler scales to 0 whatever ran for 12 hours). (name, recorded count)."""
    if kind == CRONJOB:
        return []
    return [(_name(o), awake[key(kind, o)]) for o in objs
            if not workloads.asleep_by_us(o) and workloads.replicas(o) == 0 and awake.get(key(kind, o), 0) > 0]


def awake_counts(by_kind: Mapping[str, Sequence[Mapping[str, Any]]], previous: Mapping[str, int]) -> dict[str, int]:
    """Replica counts of the managed workloads as they are when awake: the saved value of a slept one, the
    current one otherwise; a workload at 0 keeps its previous count (idled, or not yet revived)."""
    counts: dict[str, int] = {}
    for kind, objs in by_kind.items():
        if kind == CRONJOB:
            continue
        for obj in objs:
            k = key(kind, obj)
            ann = (obj.get("metadata") or {}).get("annotations") or {}
            if workloads.asleep_by_us(obj) and ann.get(naming.ANNOTATION_SAVED_REPLICAS, "").isdigit():
                counts[k] = int(ann[naming.ANNOTATION_SAVED_REPLICAS])
            elif workloads.replicas(obj) > 0:
                counts[k] = workloads.replicas(obj)
            elif previous.get(k, 0) > 0:
                counts[k] = previous[k]
    return counts


def wake_plan(kind: str, obj: Mapping[str, Any], awake: Mapping[str, int], revive: bool) -> WakeAction | None:
    """The operator's wake patch for a workload this switch slept; with `revive`, also a workload found at 0
    that it did not sleep, back to its recorded awake count. The patch carries the resourceVersion."""
    action = workloads.wake_action(kind, obj)
    if action is not None or not revive:
        return action
    count = dict(idled(kind, [obj], awake)).get(_name(obj))
    if not count:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return WakeAction({"metadata": {"resourceVersion": rv}, "spec": {"replicas": count}}, True,
                      f"{key(kind, obj)}: 0 -> {count} (revived: at 0 but not put to sleep by this switch)")


def not_ready(kind: str, objs: Iterable[Mapping[str, Any]], names: Iterable[str]) -> list[str]:
    """Which of `names` (restored workloads of `kind`) are not Ready yet; a deleted one is not waited for."""
    wanted = set(names)
    return sorted(_name(o) for o in objs if _name(o) in wanted and not workloads.ready(kind, o))
