# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""kube-apiserver stopped and started again (the bed's real one) while runs are in flight: the operator's
watches recover, no event is lost for good (runs submitted after the restart only a recovered watch can
see), and every status is right within 60 s of the moment it could be: its Job's completion, or the restart
for a Job that completed during the outage."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from kto_operator.naming import LABEL_TRAININGRUN as RUN_LABEL

from tests.chaos.support import Expected, phases, sleeper, submit_retrying, wait_converged
from tests.helpers import figure
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
    took += wait_converged(runs, mlflow_uri, expected, CONVERGE_TARGET_S + 180)
    # The operator's share: for each run, from the moment its status could be right (its Job completed, or
    # the restart for a Job that completed during the outage) to the moment the operator recorded it. The
    # total also holds the cluster's own work after the restart (controller-manager catching up, the node
    # agent starting the runs submitted after it): on a loaded 2-core machine that alone can take a minute.
    back = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=time.monotonic() - restarted)
    job_done = {j.metadata.labels.get(RUN_LABEL): (j.status.completion_time - back).total_seconds()
                for j in runs.jobs() if j.status.completion_time}
    recorded = {n: (datetime.datetime.fromisoformat(runs.status(n)["completionTime"]) - back).total_seconds()
                for n in expected}
    lag = {n: recorded[n] - max(job_done.get(n, 0.0), 0.0) for n in expected}
    worst = max(lag, key=lambda n: lag[n])
    figure("apiserver restart",
           f"API server down {down_s:.0f} s; all statuses right {took:.1f} s after its restart "
           f"(last Job completed {max(job_done.values()):.0f} s after it); {dict(phases(runs))}")
    figure("apiserver restart",
           f"operator lag, Job completed (or restart) -> status recorded: max {lag[worst]:.0f} s ({worst}), "
           f"median {sorted(lag.values())[len(lag) // 2]:.0f} s")
    assert operator.alive() and operator.starts == 1, "the operator must ride it out, not crash"
    assert len(job_done) == len(expected), f"Jobs without completion: {set(expected) - set(job_done)}"
    assert lag[worst] <= CONVERGE_TARGET_S, f"{worst}: status right only {lag[worst]:.0f} s after it could be"
    return took


@pytest.mark.integration
def test_apiserver_restart_short(bed: Any, operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    restart_under_load(bed, operator, runs, mlflow_uri, n_before=4, n_after=2, down_s=5)


@pytest.mark.chaos
def test_apiserver_restart_under_load(bed: Any, operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    restart_under_load(bed, operator, runs, mlflow_uri, n_before=20, n_after=10, down_s=30)
