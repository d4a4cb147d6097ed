"""Prometheus metrics of the power module, in the default registry (the operator serves /metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from kto_operator.power.schedule import STATES

STATE = Gauge(
    "kto_power_state", "1 for the platform's current power state, 0 for the others",
    ["namespace", "name", "state"],
)
ASLEEP = Gauge(
    "kto_power_workloads_asleep", "Workloads (Deployments, StatefulSets, CronJobs) put to sleep",
    ["namespace", "name"],
)
DEFERRED = Gauge(
    "kto_power_deferred_runs", "Active TrainingRuns holding off a sleep", ["namespace", "name"],
)
TRANSITIONS = Counter(
    "kto_power_transitions", "Power state transitions", ["namespace", "name", "state"],
)


# For an operator that serves a registry of its own: `for c in COLLECTORS: registry.register(c)`
# (a collector may belong to several registries).
COLLECTORS = (STATE, ASLEEP, DEFERRED, TRANSITIONS)


def observe(ns: str, name: str, status: Mapping[str, Any]) -> None:
    current = status.get("state")
    for s in STATES:
        STATE.labels(ns, name, s).set(1.0 if s == current else 0.0)
    ASLEEP.labels(ns, name).set(len(status.get("workloads") or ()))
    DEFERRED.labels(ns, name).set(len(status.get("deferredBy") or ()))


def transition(ns: str, name: str, state: str) -> None:
    TRANSITIONS.labels(ns, name, state).inc()


def forget(ns: str, name: str) -> None:
    """Drop the series of a deleted PowerSchedule (remove() ignores label sets it does not have)."""
    for s in STATES:
        STATE.remove(ns, name, s)
        TRANSITIONS.remove(ns, name, s)
    ASLEEP.remove(ns, name)
    DEFERRED.remove(ns, name)
