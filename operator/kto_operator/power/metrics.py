"""Prometheus metrics of the power half, in the process's one registry (kto_operator.metrics.Metrics, which
the operator serves on /metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from kto_operator.power.schedule import STATES


class PowerMetrics:
    """The PowerSchedule series, one set per (namespace, name)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge("kto_power_state", "1 for the platform's current power state, 0 for the others",
                           ["namespace", "name", "state"], registry=registry)
        self.asleep = Gauge("kto_power_workloads_asleep",
                            "Workloads (Deployments, StatefulSets, CronJobs) put to sleep", ["namespace", "name"],
                            registry=registry)
        self.deferred = Gauge("kto_power_deferred_runs", "Active TrainingRuns holding off a sleep",
                              ["namespace", "name"], registry=registry)
        self.transitions = Counter("kto_power_transitions", "Power state transitions",
                                   ["namespace", "name", "state"], registry=registry)

    def observe(self, ns: str, name: str, status: Mapping[str, Any]) -> None:
        current = status.get("state")
        for s in STATES:
            self.state.labels(ns, name, s).set(1.0 if s == current else 0.0)
        self.asleep.labels(ns, name).set(len(status.get("workloads") or ()))
        self.deferred.labels(ns, name).set(len(status.get("deferredBy") or ()))

    def transition(self, ns: str, name: str, state: str) -> None:
        self.transitions.labels(ns, name, state).inc()

    def forget(self, ns: str, name: str) -> None:
        """Drop the series of a deleted PowerSchedule (remove() ignores label sets it does not have)."""
        for s in STATES:
            self.state.remove(ns, name, s)
            self.transitions.remove(ns, name, s)
        self.asleep.remove(ns, name)
        self.deferred.remove(ns, name)
