# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""The operator SIGKILLed at random moments while runs are being submitted, then restarted each time:
afterwards every TrainingRun has exactly one Job and one MLflow run (found by its UID tag), every run
Succeeded, and no MLflow run is left RUNNING after its Job ended."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import time
from typing import Any

import pytest

from tests.chaos.support import Expected, phases, sleeper, tracebacks, wait_converged
from tests.helpers import figure
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    Operator,
    Runs,
    operator,
    runs,
    trainingrun_crd,
)


def kill_running(operator: Operator) -> bool:
    """SIGKILL the operator; True only if it was running and then died of that signal (its exit status)."""
    if not operator.alive():
        return False
    operator.kill(signal.SIGKILL)
    assert operator.proc is not None
    return operator.proc.returncode == -signal.SIGKILL


def kill_storm(operator: Operator, runs: Runs, mlflow_uri: str, n_runs: int, n_kills: int,
               max_gap: float = 3.0) -> None:
    seed = int(os.environ.get("KTO_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"KTO_CHAOS_SEED={seed}")  # rerun the same kill moments with this
    rng = random.Random(seed)
    gaps = [rng.uniform(0.0, max_gap) for _ in range(n_kills)]
    names = [f"kill-{i:02d}" for i in range(n_runs)]
    operator.start()
    # Submissions spread over the storm, so that kills land in every step of a run's creation.
    spacing = 0.8 * (sum(gaps) + 3.0 * n_kills) / max(1, n_runs)  # ~3 s per operator start

    def submit_all() -> None:
        for name in names:
            runs.submit(name, **sleeper(0.2))
            time.sleep(spacing)  # submission pacing, not an assertion

    kills = during_submissions = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        submitted = pool.submit(submit_all)
        for gap in gaps:
            time.sleep(gap)  # the random moment of the kill, not an assertion
            submitting = not submitted.done()
            if kill_running(operator):
                kills += 1
                during_submissions += submitting
            operator.start()
        submitted.result(120)  # re-raises a submission error here
    figure("SIGKILL storm", f"{n_runs} runs, {kills} kills ({during_submissions} while runs were being submitted), "
           f"{operator.starts} starts; phases right after the last restart: {dict(phases(runs))}")
    # Every turn must have killed a running operator: one that was already gone had died on its own.
    assert kills == n_kills, f"{kills} SIGKILLs landed on a running operator, of {n_kills} attempts"
    took = wait_converged(runs, mlflow_uri, {n: Expected("Succeeded") for n in names}, 240)
    figure("SIGKILL storm", f"converged {took:.1f} s after the last restart")
    # Kills leave no traceback behind (a SIGKILL prints nothing); a handler that tripped over the
    # half-done work of a killed predecessor would.
    assert not tracebacks(operator.log()), tracebacks(operator.log())[:3]


@pytest.mark.integration
def test_sigkill_during_submissions_short(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    kill_storm(operator, runs, mlflow_uri, n_runs=10, n_kills=5)


@pytest.mark.chaos
def test_sigkill_during_submissions(operator: Operator, runs: Runs, mlflow_uri: str, bed: Any) -> None:
    """50 runs, 20 kills."""
    kill_storm(operator, runs, mlflow_uri, n_runs=50, n_kills=20)
