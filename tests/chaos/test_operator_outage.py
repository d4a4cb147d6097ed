# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""The operator down (SIGKILL) while its runs finish, fail, get cancelled and get submitted: once it is
back, every status is right within 60 s (phase, reason, one Job, one MLflow run closed as it should)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.chaos.support import Expected, sleeper, until, wait_converged
from tests.helpers import figure
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    Operator,
    Runs,
    operator,
    runs,
    trainingrun_crd,
)

CONVERGE_TARGET_S = 60


def job_done(runs: Runs, name: str) -> bool:
    job = next((j for j in runs.jobs() if j.metadata.name == name), None)
    return job is not None and bool(job.status.succeeded or job.status.failed)


def outage(operator: Operator, runs: Runs, mlflow_uri: str, down_s: float, n_ok: int) -> float:
    operator.start()
    expected: dict[str, Expected] = {f"ok-{i}": Expected("Succeeded") for i in range(n_ok)}
    expected["exit-3"] = Expected("Failed", "ExitCode")
    expected["cancelled"] = Expected("Cancelled")
    for name in expected:
        # Long enough to be all Running at once; the one to cancel still runs when the operator is back.
        runs.submit(name, **sleeper(600.0 if name == "cancelled" else 10.0, exit_code=3 if name == "exit-3" else 0))
    until(lambda: all(runs.status(n).get("phase") == "Running" for n in expected), 120, "every run Running")

    operator.kill(signal.SIGKILL)
    down = time.monotonic()
    at_kill = {n: (runs.status(n).get("phase"), runs.status(n).get("reason")) for n in expected}
    runs.patch_spec("cancelled", {"cancel": True})  # a cancel nobody is there to act on yet
    expected["while-down"] = Expected("Succeeded")
    runs.submit("while-down", **sleeper(0.5))
    until(lambda: all(job_done(runs, n) for n in expected if n not in ("cancelled", "while-down")), down_s + 60,
          "the Jobs ending while the operator is down")
    assert {n: (runs.status(n).get("phase"), runs.status(n).get("reason")) for n in at_kill} == at_kill, \
        "statuses moved with no operator"
    left = down_s - (time.monotonic() - down)
    if left > 0:
        time.sleep(left)  # the rest of the outage: the scenario, not an assertion

    operator.start()
    took = wait_converged(runs, mlflow_uri, expected, CONVERGE_TARGET_S + 60)
    figure("operator outage",
           f"operator down {time.monotonic() - down - took:.0f} s; statuses right {took:.1f} s after restart")
    assert took <= CONVERGE_TARGET_S, f"statuses right only {took:.0f} s after the restart"
    return took


@pytest.mark.integration
def test_operator_down_while_runs_finish_short(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    outage(operator, runs, mlflow_uri, down_s=15, n_ok=3)


@pytest.mark.chaos
def test_operator_down_two_minutes_while_runs_finish(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    outage(operator, runs, mlflow_uri, down_s=120, n_ok=10)
