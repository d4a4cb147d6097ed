"""What the console's page shows and what its buttons write, as pure functions of the API's JSON (camelCase
dicts) and the time: run rows, a run's page, the power view with its waking progress, and the patches and
bodies of cancel, switch and run again. Unit-tested without a cluster or a browser."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kto_operator import naming, times
from kto_operator.power import workloads
from kto_operator.power.reconcile import WAKE_ORDER, governing
from kto_operator.power.schedule import WAKING_UP
from kto_operator.status import TERMINAL_PHASES

# Scalar parameter values only (the CRD takes other keys as scalars; the operator refuses anything else).
Scalar = str | int | float | bool
# A new run's name: the original's, cut to leave room for the API server's 5 random characters.
_RERUN_PREFIX_MAX = 40
_NOT_NAME = re.compile(r"[^a-z0-9-]+")


class InputError(ValueError):
    """What the page sent cannot be written (the message says why)."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _age_seconds(created: str | None, now: datetime) -> int | None:
    when = times.parse_time(created)
    return None if when is None else max(0, int((now - when).total_seconds()))


def progress(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """Epoch k of n and the percentage, when the run reports epochs."""
    raw = status.get("progress") or {}
    epoch, epochs = raw.get("epoch"), raw.get("epochs")
    if not isinstance(epochs, int) or epochs <= 0:
        return None
    done = min(int(epoch or 0), epochs)
    return {"epoch": done, "epochs": epochs, "percent": round(100 * done / epochs)}


def run_row(tr: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One line of the runs table."""
    meta, spec, status = _meta(tr), tr.get("spec") or {}, tr.get("status") or {}
    phase = status.get("phase") or "Pending"
    return {
        "name": meta.get("name"),
        "phase": phase,
        "reason": status.get("reason") or "",
        "message": (status.get("message") or "") if phase != "Succeeded" else "",
        "progress": progress(status),
        "primaryMetric": status.get("primaryMetric") or "",
        "ageSeconds": _age_seconds(meta.get("creationTimestamp"), now),
        "created": meta.get("creationTimestamp"),
        "mlflowUrl": (status.get("mlflow") or {}).get("url") or "",
        "experiment": spec.get("experiment") or "",
        "cancelRequested": bool(spec.get("cancel")),
        "cancellable": phase not in TERMINAL_PHASES and not spec.get("cancel"),
    }


def run_rows(runs: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Newest first, then by name."""
    ordered = sorted(runs, key=lambda r: (_meta(r).get("creationTimestamp") or "", _meta(r).get("name") or ""),
                     reverse=True)
    return [run_row(r, now) for r in ordered]


def run_detail(tr: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A run's page: its row plus conditions, parameters, final metrics and what it ran."""
    spec, status = tr.get("spec") or {}, tr.get("status") or {}
    conditions = [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason") or "",
                   "message": c.get("message") or "", "lastTransitionTime": c.get("lastTransitionTime") or ""}
                  for c in status.get("conditions") or []]
    metrics = status.get("metrics") or {}
    return {
        **run_row(tr, now),
        "message": status.get("message") or "",
        "image": spec.get("image") or "",
        "conditions": conditions,
        "parameters": dict(spec.get("parameters") or {}),
        "metrics": {k: metrics[k] for k in sorted(metrics)},
        "chartMetric": chart_metric(tr),
        "modelVersion": status.get("modelVersion") or "",
        "startTime": status.get("startTime") or "",
        "completionTime": status.get("completionTime") or "",
        "mlflowRunId": (status.get("mlflow") or {}).get("runId") or "",
    }


def chart_metric(tr: Mapping[str, Any]) -> str | None:
    """The metric charted by default: the registered model's metric, else the primary one, else loss."""
    metrics = (tr.get("status") or {}).get("metrics") or {}
    register = ((tr.get("spec") or {}).get("registerModel") or {}).get("metric")
    primary = ((tr.get("status") or {}).get("primaryMetric") or "").partition("=")[0]
    for key in (register, primary, "accuracy", "loss"):
        if key and key in metrics:
            return str(key)
    return min(metrics, default=None)


def history_points(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """MLflow's metric history as (step, value) points ordered by step, the latest value of a repeated step."""
    by_step: dict[int, tuple[int, float]] = {}
    for point in history:
        try:
            step, stamp, value = int(point.get("step") or 0), int(point.get("timestamp") or 0), float(point["value"])
        except (KeyError, TypeError, ValueError):
            continue
        if step not in by_step or stamp >= by_step[step][0]:
            by_step[step] = (stamp, value)
    return [{"step": s, "value": v} for s, (_, v) in sorted(by_step.items()) if v == v]  # v == v: no NaN


# --- writes ----------------------------------------------------------------------------------------------

def cancel_patch() -> dict[str, Any]:
    """`cancel` is the only field of a TrainingRun's spec that may change (and only to true)."""
    return {"spec": {"cancel": True}}


def power_patch(power: Mapping[str, Any], state: str, now: datetime) -> dict[str, Any]:
    """What `kubectl patch powerschedule NAME --type merge -p '{"spec":{"state":"off"}}'` writes; when the
    switch already holds that value (a schedule or an idle sleep acted since), setting it again is no event:
    the one-shot request annotation is, dated now."""
    if state not in ("on", "off"):
        raise InputError(f"state must be on or off, got {state!r}")
    patch: dict[str, Any] = {"spec": {"state": state}}
    if (power.get("spec") or {}).get("state") == state:
        key = naming.ANNOTATION_WAKE_REQUESTED_AT if state == "on" else naming.ANNOTATION_SLEEP_REQUESTED_AT
        patch["metadata"] = {"annotations": {key: times.format_time(now)}}
    return patch


def parameters(raw: Any) -> dict[str, Scalar]:
    """Edited parameters from the page: an object of scalars with parameter-like keys."""
    if not isinstance(raw, dict):
        raise InputError("parameters must be an object")
    if len(raw) > 64:
        raise InputError("at most 64 parameters")
    out: dict[str, Scalar] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", key):
            raise InputError(f"{key!r} is not a parameter name")
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(f"parameter {key}: a string, number or boolean, got {type(value).__name__}")
        out[key] = value
    return out


def rerun_body(tr: Mapping[str, Any], params: Mapping[str, Scalar]) -> dict[str, Any]:
    """A new TrainingRun from this one's spec with `params` as its parameters (cancel dropped); named by the
    API server after the original (generateName), annotated with the original's name."""
    meta = _meta(tr)
    spec = copy.deepcopy(dict(tr.get("spec") or {}))
    spec.pop("cancel", None)
    if params:
        spec["parameters"] = dict(params)
    else:
        spec.pop("parameters", None)
    base = _NOT_NAME.sub("-", str(meta.get("name") or "run").lower())[:_RERUN_PREFIX_MAX].strip("-") or "run"
    return {
        "apiVersion": naming.API_VERSION, "kind": naming.KIND,
        "metadata": {"generateName": f"{base}-", "namespace": meta.get("namespace"),
                     "annotations": {naming.ANNOTATION_RERUN_OF: str(meta.get("name") or "")}},
        "spec": spec,
    }


# --- power -----------------------------------------------------------------------------------------------

def _ready_replicas(obj: Mapping[str, Any]) -> int:
    return int((obj.get("status") or {}).get("readyReplicas") or 0)


def workload_row(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    ann = _meta(obj).get("annotations") or {}
    row: dict[str, Any] = {"kind": kind, "name": _meta(obj).get("name"), "asleep": workloads.asleep_by_us(obj),
                           "ready": workloads.ready(kind, obj)}
    if kind == workloads.CRONJOB:
        row.update(suspended=bool((obj.get("spec") or {}).get("suspend")),
                   savedSuspend=ann.get(naming.ANNOTATION_SAVED_SUSPEND))
    else:
        saved = ann.get(naming.ANNOTATION_SAVED_REPLICAS)
        row.update(replicas=workloads.replicas(obj), readyReplicas=_ready_replicas(obj),
                   savedReplicas=int(saved) if saved and saved.isdigit() else None)
    return row


def waking_steps(status: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """While the platform wakes: each workload being restored, in the wake order (StatefulSets, then
    Deployments, then CronJobs), as done (Ready), starting (restored, not Ready yet) or waiting."""
    if status.get("state") != WAKING_UP:
        return []
    restoring = {(w.get("kind"), w.get("name")) for w in status.get("workloads") or []}
    by_key = {(r["kind"], r["name"]): r for r in rows}
    steps = []
    for kind in WAKE_ORDER:
        for kind_, name in sorted(k for k in restoring if k[0] == kind):
            row = by_key.get((kind_, name))
            state = "waiting" if row is None or row["asleep"] else "done" if row["ready"] else "starting"
            steps.append({"kind": kind, "name": str(name), "state": state})
    return steps


def power_view(powers: Sequence[Mapping[str, Any]], by_kind: Mapping[str, Sequence[Mapping[str, Any]]]
               ) -> dict[str, Any] | None:
    """The namespace's switch (the governing PowerSchedule), its state, reason and next switch times, the
    workloads it manages with current and saved replicas, and the wake's progress. None: no PowerSchedule."""
    name = governing(powers)
    power = next((p for p in powers if _meta(p).get("name") == name), None)
    if power is None:
        return None
    spec, status = power.get("spec") or {}, power.get("status") or {}
    selection = workloads.Selection.from_spec(spec)
    rows = [workload_row(kind, o) for kind in WAKE_ORDER for o in sorted(by_kind.get(kind, ()),
                                                                          key=lambda o: _meta(o).get("name") or "")
            if workloads.exclusion(kind, o, selection) is None]
    state = status.get("state") or ""
    return {
        "name": name,
        "state": state,
        "on": state in ("On", WAKING_UP) if state else spec.get("state") != "off",
        "switch": spec.get("state") or "",
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
        "nextOn": status.get("nextOn") or "",
        "nextOff": status.get("nextOff") or "",
        "lastTransition": status.get("lastTransition") or "",
        "deferredBy": list(status.get("deferredBy") or []),
        "workloads": rows,
        "waking": waking_steps(status, rows),
    }
