# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""The MLflow server stopped while runs are in flight and submitted: runs wait with reason
MlflowUnavailable (no Job before their MLflow run exists; a finished Job waits to be recorded), then
proceed once it is back; nothing lost: one Job and one MLflow run each, closed FINISHED.

The short version stops a private MLflow server (the bed's stays up for everyone else's tests); the
chaos version stops the bed's own (`bed.stop("mlflow")`) for 2 minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import Expected, phases, sleeper, until, wait_converged
from tests.helpers import figure
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    MlflowServer,
    Operator,
    Runs,
    trainingrun_crd,
)

# After MLflow is back: a waiting run retries after at most KTO_MLFLOW_RETRY_MAX_DELAY (60 s by default).
PROCEED_MARGIN_S = 60


def outage(bed: Any, namespace: str, runs: Runs, tmp_path: Path, uri: str, stop: Callable[[], None],
           start: Callable[[], None], down_s: float, n_before: int, n_during: int, env: dict[str, str]) -> None:
    op = Operator(bed, namespace, tmp_path, env={"KTO_MLFLOW_TRACKING_URI": uri, **env})
    expected: dict[str, Expected] = {}
    try:
        op.start()
        for i in range(n_before):  # these finish during the outage: their MLflow runs exist already
            expected[f"before-{i}"] = Expected("Succeeded")
            runs.submit(f"before-{i}", **sleeper(2.0))
        for name in list(expected):
            runs.wait_phase(name, "Running", 120)
        stopped = time.monotonic()
        stop()
        try:
            for i in range(n_during):  # these cannot start: no MLflow run, hence no Job
                expected[f"during-{i}"] = Expected("Succeeded")
                runs.submit(f"during-{i}", **sleeper(0.5))
            waiting = [n for n in expected if n.startswith("during-")]
            until(lambda: all(runs.status(n).get("reason") == "MlflowUnavailable" for n in expected), 90,
                  "every run waiting with reason MlflowUnavailable")
            assert all(runs.status(n)["phase"] == "Pending" for n in waiting)
            assert not {j.metadata.name for j in runs.jobs()} & set(waiting), "a Job before its MLflow run"
            assert all(runs.status(n)["phase"] == "Running" for n in expected if n.startswith("before-")), \
                "a finished run recorded while MLflow was down"
            left = down_s - (time.monotonic() - stopped)
            if left > 0:
                time.sleep(left)  # the rest of the outage: the scenario, not an assertion
        finally:
            start()
        back = time.monotonic()
        figure("MLflow outage", f"MLflow down {back - stopped:.0f} s; {dict(phases(runs))}")
        took = wait_converged(runs, uri, expected, PROCEED_MARGIN_S + 60, experiment=f"it-{namespace}")
        figure("MLflow outage", f"every run right {took:.1f} s after MLflow came back")
        assert took <= PROCEED_MARGIN_S + 30
        assert op.alive() and op.starts == 1, "no crash loop"
    finally:
        for name in expected:
            runs.delete(name)
        until(lambda: not runs.custom.list_namespaced_custom_object(
            "kto.dev", "v1alpha1", namespace, "trainingruns")["items"], 60, "runs deleted")
        op.stop()
        print(op.log()[-8000:])


@pytest.mark.integration
def test_mlflow_outage_short(bed: Any, namespace: str, trainingrun_crd: None, tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        # Short retry delays: the default backoff (up to 60 s) would make this test a minute longer.
        outage(bed, namespace, Runs(bed, namespace), tmp_path, server.uri, server.stop, server.start, down_s=10,
               n_before=2, n_during=2, env={"KTO_MLFLOW_RETRY_DELAY": "1", "KTO_MLFLOW_RETRY_MAX_DELAY": "4"})
    finally:
        server.stop()


@pytest.mark.chaos
def test_bed_mlflow_stopped_two_minutes(bed: Any, namespace: str, trainingrun_crd: None, tmp_path: Path,
                                        mlflow_uri: str) -> None:
    """The operator's default retry delays (5 s doubling up to 60 s)."""
    outage(bed, namespace, Runs(bed, namespace), tmp_path, mlflow_uri, lambda: bed.stop("mlflow"),
           lambda: bed.start("mlflow"), down_s=120, n_before=5, n_during=5, env={})
