"""The process's Prometheus metrics, both halves in one registry, served on their own port (`/metrics`)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .power.metrics import PowerMetrics
from .status import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, WAITING_FOR_PLATFORM

PHASES = (PENDING, WAITING_FOR_PLATFORM, RUNNING, SUCCEEDED, FAILED, CANCELLED)
# Submission to Job creation: dominated by MLflow round trips; buckets from 50 ms to 2 min.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120)


class Metrics:
    """The operator's metrics in a registry of their own, not prometheus_client's global one (several
    operators can live in one test process). `power`: the PowerSchedule series, in the same registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Gauge("kto_trainingruns", "TrainingRuns known to the operator, by phase",
                          ["phase"], registry=self.registry)
        self.submit_to_job = Histogram(
            "kto_trainingrun_submit_to_job_seconds",
            "Seconds from a TrainingRun's creation to the creation of its Job",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.transitions = Counter("kto_trainingrun_transitions", "Phase transitions of TrainingRuns",
                                   ["phase", "reason"], registry=self.registry)
        self.mlflow_errors = Counter("kto_mlflow_unavailable", "MLflow calls that found it unreachable",
                                     registry=self.registry)
        self.power = PowerMetrics(self.registry)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in PHASES:
            self.runs.labels(phase).set(0)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def set_phase(self, uid: str, phase: str | None) -> None:
        """Record the phase of one run (None: forget it) and move the per-phase gauge by that one run (a
        recount would cost every event as many steps as there are runs)."""
        with self._lock:
            before = self._phases.pop(uid, None) if phase is None else self._phases.get(uid)
            if phase is not None:
                self._phases[uid] = phase
            if before != phase:
                if before is not None:
                    self.runs.labels(before).dec()
                if phase is not None:
                    self.runs.labels(phase).inc()


def shared(memo: Any) -> Metrics:
    """The process's one Metrics, kept in kopf's memo: made by whichever half's startup handler runs first
    (the power handlers also run alone, under `kopf run`)."""
    if "metrics" not in memo:
        memo["metrics"] = Metrics()
    metrics: Metrics = memo["metrics"]
    return metrics
