# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""kube-apiserver stopped and started again (the bed's real one) while runs are in flight: the operator's
watches recover, no event is lost for good, and every status is right within 60 s of the restart
(including runs submitted after it, which only a recovered watch can see)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from tests.chaos.support import Expected, phases, sleeper, submit_retrying, wait_converged
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    Operator,
    Runs,
    operator,
    runs,
    trainingrun_crd,
)

CONVERGE_TARGET_S = 60


def restart_under_load(bed: Any, operator: Operator, runs: Runs, mlflow_uri: str, n_before: int, n_after: int,
                       down_s: float) -> float:
    operator.start()
    expected: dict[str, Expected] = {}
    # Runs in every state when the API server goes: finishing, running, just submitted.
    for i in range(n_before):
        name = f"before-{i}"
        expected[name] = Expected("Succeeded")
        runs.submit(name, **sleeper(1.0 + 0.5 * i))
    runs.wait_phase("before-0", "Running", 120)
    bed.stop("kube-apiserver")
    try:
        time.sleep(down_s)  # the outage itself, not an assertion
    finally:
        bed.start("kube-apiserver")
    restarted = time.monotonic()
    for i in range(n_after):
        name = f"after-{i}"
        expected[name] = Expected("Succeeded")
        submit_retrying(runs, name, sleeper(0.5))
    took = time.monotonic() - restarted
    took += wait_converged(runs, mlflow_uri, expected, CONVERGE_TARGET_S + 60)
    print(f"API server down {down_s:.0f} s; statuses right {took:.1f} s after its restart; {dict(phases(runs))}")
    # Where the time went: the Jobs' own completion (controller-manager and node agent recovering) vs.
    # the runs' (the operator), both as seconds after the restart (second resolution).
    back = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=time.monotonic() - restarted)
    jobs_done = sorted((j.status.completion_time - back).total_seconds() for j in runs.jobs()
                       if j.status.completion_time)
    runs_done = sorted((datetime.datetime.fromisoformat(runs.status(n)["completionTime"]) - back).total_seconds()
                       for n in expected)
    print(f"  last Job completed {jobs_done[-1]:.0f} s after the restart, last run recorded "
          f"{runs_done[-1]:.0f} s after")
    assert operator.alive() and operator.starts == 1, "the operator must ride it out, not crash"
    assert took <= CONVERGE_TARGET_S, f"statuses right only {took:.0f} s after the restart"
    return took


@pytest.mark.integration
def test_apiserver_restart_short(bed: Any, operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    restart_under_load(bed, operator, runs, mlflow_uri, n_before=4, n_after=2, down_s=5)


@pytest.mark.chaos
def test_apiserver_restart_under_load(bed: Any, operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    restart_under_load(bed, operator, runs, mlflow_uri, n_before=20, n_after=10, down_s=30)
