"""workers.observe: the phase of a run of N workers from its Indexed Job and pods, and workers ready/total."""

from __future__ import annotations

from typing import Any

import pytest
from kto_operator import indexed, status, workers

from .test_status import LIMITS, LOG, NOW, RUNNING, ago, job, pod, terminated, waiting


def indexed_job(*conditions: tuple[str, str], count: int = 2) -> dict[str, Any]:
    result = job(*conditions)
    result["spec"].update(completionMode="Indexed", completions=count, parallelism=count)
    return result


def worker(index: int, state: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    result = pod(state, name=f"run-{index}-abcde", **kwargs)
    result["metadata"]["annotations"] = {indexed.COMPLETION_INDEX_ANNOTATION: str(index)}
    return result


def ended(code: int, finished: float, reason: str = "Error", message: str = "") -> dict[str, Any]:
    state = terminated(code, reason, message)
    state["terminated"]["finishedAt"] = ago(finished)
    return state


def observe(job_obj: dict[str, Any], *pods: dict[str, Any]) -> status.Observation:
    return workers.observe(job_obj, list(pods), NOW, LIMITS)


def test_one_worker_is_status_observe_plus_the_count() -> None:
    for pods in ([], [pod(waiting("ContainerCreating"), phase="Pending")], [pod(RUNNING)]):
        observed = workers.observe(job(), pods, NOW, LIMITS)
        plain = status.observe(job(), pods, NOW, LIMITS)
        assert observed == plain.__class__(**{**plain.__dict__, "workers": observed.workers})
    assert workers.observe(job(), [pod(RUNNING)], NOW, LIMITS).workers == "1/1"
    assert workers.observe(job(), [], NOW, LIMITS).workers == "0/1"


def test_pending_until_every_worker_runs() -> None:
    observed = observe(indexed_job(), worker(0, RUNNING), worker(1, waiting("ContainerCreating"), phase="Pending"))
    assert (observed.phase, observed.reason) == ("Pending", "ContainerCreating")
    assert observed.message.startswith("worker 1: ")
    assert observed.workers == "1/2"
    observed = observe(indexed_job(), worker(0, RUNNING))  # worker 1's pod not created yet
    assert (observed.phase, observed.reason) == ("Pending", "WorkersStarting")
    assert observed.message == "1 of 2 workers started"


def test_running_once_all_run_and_while_the_chief_finishes() -> None:
    observed = observe(indexed_job(), worker(0, RUNNING), worker(1, RUNNING))
    assert (observed.phase, observed.reason, observed.workers) == ("Running", "Running", "2/2")
    assert observed.message == "2 of 2 workers running" and observed.start_time
    # Worker 1 is done with training; the chief still evaluates and logs the model.
    observed = observe(indexed_job(), worker(0, RUNNING), worker(1, ended(0, 1, "Completed"), phase="Succeeded"))
    assert (observed.phase, observed.reason, observed.workers) == ("Running", "Running", "2/2")
    assert observed.message == "1 of 2 workers running, 1 finished"


def test_complete() -> None:
    done = [worker(i, ended(0, 1, "Completed"), phase="Succeeded") for i in range(2)]
    observed = observe(indexed_job(("Complete", "CompletionsReached")), *done)
    assert (observed.phase, observed.workers) == ("Succeeded", "2/2")


def test_a_failed_worker_is_named_not_the_ones_stopped_after_it() -> None:
    # Worker 1 killed (137) first; worker 0 then stopped by the Job controller (143), its pod newer in the list.
    killed = worker(1, ended(137, 20, message=LOG), phase="Failed", created=30)
    stopped = worker(0, ended(143, 5, message="kto-train: terminated"), phase="Failed", created=12)
    observed = observe(indexed_job(("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")),
                       stopped, killed)
    assert (observed.phase, observed.reason) == ("Failed", "ExitCode")
    assert observed.message.startswith("worker 1 (pod run-1-abcde): trainer exited with code 137")
    assert observed.message.endswith("ValueError: boom")
    assert observed.workers == "0/2"


def test_within_one_second_the_worker_stopped_by_sigterm_is_not_the_cause() -> None:
    stopped = worker(0, ended(143, 3), phase="Failed", created=5)
    killed = worker(1, ended(137, 3), phase="Failed", created=30)
    for pods in ([stopped, killed], [killed, stopped]):
        observed = observe(indexed_job(("Failed", "PodFailurePolicy")), *pods)
        assert observed.message.startswith("worker 1 (pod run-1-abcde): trainer exited with code 137"), observed


def test_failure_target_says_which_worker_stops_the_others() -> None:
    observed = observe(indexed_job(("FailureTarget", "PodFailurePolicy")),
                       worker(0, RUNNING), worker(1, ended(3, 2), phase="Failed"))
    assert (observed.phase, observed.reason) == ("Running", "Stopping")
    assert observed.message.startswith("worker 1 (pod run-1-abcde): trainer exited with code 3")
    assert observed.message.endswith("stopping the other workers")


def test_oom_of_one_worker() -> None:
    observed = observe(indexed_job(("Failed", "PodFailurePolicy")),
                       worker(0, RUNNING), worker(1, ended(137, 1, "OOMKilled"), phase="Failed", memory="1Gi"))
    assert (observed.phase, observed.reason) == ("Failed", "OOMKilled")
    assert observed.message.startswith("worker 1 (pod run-1-abcde): trainer was killed for exceeding its memory")


def test_failed_job_without_pods_keeps_the_job_message() -> None:
    observed = observe(indexed_job(("Failed", "PodFailurePolicy")))
    assert (observed.phase, observed.reason, observed.message) == ("Failed", "PodFailurePolicy", "job PodFailurePolicy")


def test_deadline_stays_deadline() -> None:
    observed = observe(indexed_job(("Failed", "DeadlineExceeded")), worker(0, ended(143, 1), phase="Failed"))
    assert observed.reason == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("stuck", "phase", "reason", "stop"),
    [
        (worker(1, waiting("ImagePullBackOff", "Back-off"), phase="Pending", started=60), "Failed",
         "ImagePullBackOff", True),
        (worker(1, None, phase="Pending", conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes: cpu"}]),
         "Pending", "Unschedulable", False),
        (worker(1, waiting("CreateContainerConfigError", "secret missing"), phase="Pending"), "Pending",
         "CreateContainerConfigError", False),
    ],
)
def test_one_worker_that_cannot_start_explains_the_run(stuck: dict[str, Any], phase: str, reason: str,
                                                       stop: bool) -> None:
    observed = observe(indexed_job(), worker(0, RUNNING), stuck)
    assert (observed.phase, observed.reason, observed.stop_job) == (phase, reason, stop)
    assert observed.message.startswith("worker 1: ")


def test_newest_pod_of_each_index_counts() -> None:
    old = worker(1, ended(1, 50), phase="Failed", created=60)
    new = worker(1, RUNNING, created=5)
    assert workers.ready([worker(0, RUNNING), old, new]) == 2
    assert workers.newest_by_worker([new, old])[1] is new


def test_mlflow_status_of_the_operator_stands_for_several_workers() -> None:
    many, one = {"workers": 2}, {"workers": 1}
    assert workers.mlflow_overrides(many, status.FAILED) == {"KILLED", "FAILED"}
    assert workers.mlflow_overrides(many, status.CANCELLED) == {"KILLED", "FAILED"}
    assert workers.mlflow_overrides(many, status.SUCCEEDED) == frozenset()
    assert workers.mlflow_overrides(one, status.FAILED) == frozenset()
    assert workers.mlflow_overrides({}, status.CANCELLED) == frozenset()
