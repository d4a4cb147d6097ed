"""Shared by the reliability tests: cheap TrainingRuns (pods that only sleep, so the node and MLflow stay
calm), the end-state check every scenario ends with, and operator-log checks.

The end state of a scenario, per TrainingRun: the expected final phase, exactly one Job owned by it,
exactly one MLflow run tagged with its UID (the one in status.mlflow.runId), and that run closed with
the matching status (never RUNNING once the Job has ended).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from tests.helpers import STANDIN_IMAGE, sleep_command
from tests.integration.operator_fixtures import Runs, mlflow_client

MLFLOW_STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Cancelled": "KILLED"}
TRACEBACK = "Traceback (most recent call last)"


def sleeper(seconds: float = 0.0, exit_code: int = 0) -> dict[str, Any]:
    """Spec of a run whose trainer sleeps, then exits (no MLflow traffic from the pod: the operator alone
    creates and closes the MLflow run)."""
    return {"image": STANDIN_IMAGE, "command": sleep_command(seconds, exit_code)}


@dataclasses.dataclass(frozen=True)
class Expected:
    phase: str
    reason: str | None = None


def submit_retrying(runs: Runs, name: str, spec: Mapping[str, Any], timeout: float = 60) -> None:
    """Create a TrainingRun, retrying while the API server is unreachable (restart scenarios); a 409 means
    an earlier attempt got through."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            runs.submit(name, **spec)
            return
        except ApiException as err:
            if err.status == 409:
                return
            if err.status < 500 or time.monotonic() > deadline:
                raise
        except HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)  # retry pacing while the API server is away


def mlflow_runs_by_uid(mlflow_uri: str, experiment: str) -> dict[str, list[Any]]:
    """Every MLflow run of the experiment (deleted ones too), grouped by the TrainingRun UID tag."""
    from mlflow.entities import ViewType

    mlflow = mlflow_client(mlflow_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    grouped: dict[str, list[Any]] = collections.defaultdict(list)
    token = None
    while True:
        page = mlflow.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                                  page_token=token)
        for run in page:
            grouped[run.data.tags.get("kto.dev/uid", "")].append(run)
        token = page.token
        if not token:
            return grouped


def problems(runs: Runs, mlflow_uri: str, expected: Mapping[str, Expected], experiment: str | None = None,
             check_mlflow: bool = True) -> list[str]:
    """Everything that differs from the expected end state (empty: all good)."""
    experiment = experiment or f"it-{runs.namespace}"
    found: list[str] = []
    items = {i["metadata"]["name"]: i for i in runs.custom.list_namespaced_custom_object(
        "kto.dev", "v1alpha1", runs.namespace, "trainingruns")["items"]}
    jobs_by_owner: dict[str, list[str]] = collections.defaultdict(list)
    for job in runs.jobs():
        for ref in job.metadata.owner_references or []:
            jobs_by_owner[ref.uid].append(job.metadata.name)
    by_uid = mlflow_runs_by_uid(mlflow_uri, experiment) if check_mlflow else {}
    for name, want in expected.items():
        tr = items.get(name)
        if tr is None:
            found.append(f"{name}: TrainingRun missing")
            continue
        st, uid = tr.get("status") or {}, tr["metadata"]["uid"]
        if st.get("phase") != want.phase or (want.reason and st.get("reason") != want.reason):
            found.append(f"{name}: {st.get('phase')}/{st.get('reason')} ({st.get('message', '')[:120]!r}), "
                         f"expected {want.phase}/{want.reason or '*'}")
        owned = jobs_by_owner.get(uid, [])
        if len(owned) != 1 and not (want.phase == "Cancelled" and not owned):
            found.append(f"{name}: {len(owned)} Jobs {owned}")
        if not check_mlflow:
            continue
        tracked = by_uid.get(uid, [])
        if len(tracked) != 1:
            found.append(f"{name}: {len(tracked)} MLflow runs")
            continue
        run = tracked[0]
        if run.info.run_id != (st.get("mlflow") or {}).get("runId"):
            found.append(f"{name}: status names MLflow run {(st.get('mlflow') or {}).get('runId')}, "
                         f"the tagged one is {run.info.run_id}")
        if run.info.status != MLFLOW_STATUS.get(want.phase, run.info.status):
            found.append(f"{name}: MLflow run {run.info.status}, expected {MLFLOW_STATUS[want.phase]}")
    return found


def wait_converged(runs: Runs, mlflow_uri: str, expected: Mapping[str, Expected], timeout: float,
                   experiment: str | None = None, interval: float = 1.0) -> float:
    """Seconds until the end state holds (fails with what is still wrong after `timeout`). Cheap check
    first (phases), MLflow only once every phase is right."""
    start = time.monotonic()
    last: list[str] = []
    while True:
        last = problems(runs, mlflow_uri, expected, experiment, check_mlflow=False)
        if not last:
            last = problems(runs, mlflow_uri, expected, experiment)
            if not last:
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not converged after {timeout:.0f} s: {len(last)} problems, e.g.\n  "
                                 + "\n  ".join(last[:15]))
        time.sleep(interval)


def phases(runs: Runs) -> collections.Counter[str]:
    items = runs.custom.list_namespaced_custom_object("kto.dev", "v1alpha1", runs.namespace,
                                                      "trainingruns")["items"]
    return collections.Counter(f"{(i.get('status') or {}).get('phase')}/{(i.get('status') or {}).get('reason')}"
                               for i in items)


def tracebacks(log: str) -> list[str]:
    """The tracebacks in an operator log, each with the line before it (kopf's 'Handler ... failed')."""
    lines = log.splitlines()
    return ["\n".join(lines[max(0, i - 1): i + 12]) for i, line in enumerate(lines) if TRACEBACK in line]


def step_lines(log: str) -> int:
    """How many steps of TrainingRuns an operator log shows (the operator logs each one it writes,
    `kto_operator.writes: NS/NAME: Phase (Reason)`): zero for a replica that never acted."""
    return len(re.findall(r"kto_operator\.writes: \S+/\S+: \w+ \(", log))


def until(fn: Callable[[], Any], timeout: float, desc: str, interval: float = 0.25) -> float:
    """Seconds until fn() is truthy (AssertionError after timeout)."""
    start = time.monotonic()
    while not fn():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {desc}")
        time.sleep(interval)
    return time.monotonic() - start
