"""Status mapping: Job + pods -> phase, reason, message (table-driven)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kto_operator import status, times
from kto_operator.status import Limits, Observation

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
LIMITS = Limits(fail_fast_seconds=30, log_tail_lines=3, message_max_chars=200)


def ago(seconds: float) -> str:
    return times.format_time(NOW - datetime.timedelta(seconds=seconds))


def job(*conditions: tuple[str, str], deadline: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"backoffLimit": 0}
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    return {"metadata": {"name": "run"}, "spec": spec,
            "status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": f"job {r}"}
                                      for t, r in conditions]}}


def pod(state: dict[str, Any] | None = None, *, phase: str = "Running", started: float = 10,
        created: float = 12, memory: str | None = None, conditions: list[dict[str, Any]] | None = None,
        reason: str | None = None, name: str = "run-abcde", last_state: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "trainer"}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    pod_status: dict[str, Any] = {"phase": phase, "startTime": ago(started), "conditions": conditions or []}
    if state is not None:
        pod_status["containerStatuses"] = [{"name": "trainer", "state": state, "lastState": last_state or {}}]
    if reason:
        pod_status["reason"] = reason
    return {"metadata": {"name": name, "creationTimestamp": ago(created)}, "spec": {"containers": [container]},
            "status": pod_status}


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, "message": message, "startedAt": ago(9)}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


RUNNING = {"running": {"startedAt": ago(9)}}
LOG = "line 1\nline 2\nline 3\nTraceback\nValueError: boom\n"

CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], str, str]] = [
    ("no pod yet", job(), [], "Pending", "JobCreated"),
    ("pod not scheduled", job(), [pod(None, phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes: gpu"}])],
     "Pending", "Unschedulable"),
    ("container creating", job(), [pod(waiting("ContainerCreating"), phase="Pending")], "Pending", "ContainerCreating"),
    ("pod without statuses", job(), [pod(None, phase="Pending")], "Pending", "PodPending"),
    ("missing secret", job(), [pod(waiting("CreateContainerConfigError", 'secret "s3" not found'),
                                   phase="Pending")], "Pending", "CreateContainerConfigError"),
    ("image pull, young", job(), [pod(waiting("ErrImagePull"), phase="Pending", started=5)], "Pending", "ErrImagePull"),
    ("image pull, old", job(), [pod(waiting("ImagePullBackOff", "Back-off pulling image"), phase="Pending",
                                    started=31)], "Failed", "ImagePullBackOff"),
    ("invalid image name", job(), [pod(waiting("InvalidImageName"), phase="Pending", started=60)],
     "Failed", "InvalidImageName"),
    ("running", job(), [pod(RUNNING)], "Running", "Running"),
    ("pod ended, Job not yet", job(), [pod(terminated(0, "Completed"), phase="Succeeded")], "Running",
     "PodTerminated"),
    ("complete", job(("Complete", "")), [pod(terminated(0, "Completed"), phase="Succeeded")], "Succeeded",
     "Completed"),
    ("success criteria met", job(("SuccessCriteriaMet", "CompletionsReached")), [], "Succeeded", "Completed"),
    ("exit code", job(("Failed", "BackoffLimitExceeded")), [pod(terminated(3, message=LOG), phase="Failed")],
     "Failed", "ExitCode"),
    ("failure target first: pod still stopping", job(("FailureTarget", "DeadlineExceeded")), [pod(RUNNING)],
     "Running", "Stopping"),
    ("failure target then failed", job(("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")),
     [pod(terminated(1, message=LOG), phase="Failed")], "Failed", "ExitCode"),
    ("oom", job(("Failed", "BackoffLimitExceeded")),
     [pod(terminated(137, "OOMKilled"), phase="Failed", memory="64Mi")], "Failed", "OOMKilled"),
    ("oom in last state", job(("Failed", "BackoffLimitExceeded")),
     [pod({}, phase="Failed", last_state=terminated(137, "OOMKilled"))], "Failed", "OOMKilled"),
    ("deadline", job(("Failed", "DeadlineExceeded"), deadline=5), [], "Failed", "DeadlineExceeded"),
    ("deadline with killed pod", job(("Failed", "DeadlineExceeded"), deadline=5),
     [pod(terminated(143, message=LOG), phase="Failed")], "Failed", "DeadlineExceeded"),
    ("evicted", job(("Failed", "BackoffLimitExceeded")), [pod(None, phase="Failed", reason="Evicted")],
     "Failed", "Evicted"),
    ("failed, no pod left", job(("Failed", "PodFailurePolicy")), [], "Failed", "PodFailurePolicy"),
    ("suspended", job(("Suspended", "JobSuspended")), [], "Pending", "Suspended"),
]


@pytest.mark.parametrize(("desc", "job_obj", "pods", "phase", "reason"), CASES, ids=[c[0] for c in CASES])
def test_observe(desc: str, job_obj: dict[str, Any], pods: list[dict[str, Any]], phase: str, reason: str) -> None:
    observed = status.observe(job_obj, pods, NOW, LIMITS)
    assert (observed.phase, observed.reason) == (phase, reason), observed
    assert observed.message
    assert len(observed.message) <= LIMITS.message_max_chars + 100


def test_exit_code_and_log_tail_in_message() -> None:
    observed = status.observe(job(("Failed", "BackoffLimitExceeded")), [pod(terminated(3, message=LOG))], NOW, LIMITS)
    assert "exited with code 3" in observed.message
    assert observed.message.endswith("line 3\nTraceback\nValueError: boom")
    assert "line 2" not in observed.message  # 3 lines kept


def test_oom_message_names_the_limit() -> None:
    observed = status.observe(job(("Failed", "BackoffLimitExceeded")),
                              [pod(terminated(137, "OOMKilled"), memory="64Mi")], NOW, LIMITS)
    assert "64Mi" in observed.message and "137" in observed.message


def test_image_pull_failure_asks_to_stop_the_job() -> None:
    observed = status.observe(job(), [pod(waiting("ErrImagePull"), phase="Pending", started=40)], NOW, LIMITS)
    assert observed.terminal and observed.stop_job
    assert not status.observe(job(), [pod(RUNNING)], NOW, LIMITS).stop_job


def test_fail_fast_window_is_a_setting() -> None:
    pods = [pod(waiting("ErrImagePull"), phase="Pending", started=5)]
    assert status.observe(job(), pods, NOW, Limits(fail_fast_seconds=0)).phase == "Failed"
    assert status.observe(job(), pods, NOW, Limits(fail_fast_seconds=60)).phase == "Pending"


def test_newest_pod_decides() -> None:
    old = pod(terminated(1), phase="Failed", created=100, name="old")
    new = pod(RUNNING, created=5, name="new")
    observed = status.observe(job(), [old, new], NOW, LIMITS)
    assert observed.phase == "Running" and "new" in observed.message


def test_start_time_from_running_container() -> None:
    assert status.observe(job(), [pod(RUNNING)], NOW, LIMITS).start_time == ago(9)
    assert status.observe(job(), [], NOW, LIMITS).start_time is None


def test_terminal() -> None:
    assert Observation("Failed", "x", "y").terminal
    assert not Observation("Running", "x", "y").terminal


@pytest.mark.parametrize(("text", "lines", "chars", "expected"), [
    ("", 3, 100, ""),
    (None, 3, 100, ""),
    ("a\nb\nc\nd\n", 2, 100, "c\nd"),
    ("x" * 50, 5, 10, "…" + "x" * 9),
])
def test_log_tail(text: str | None, lines: int, chars: int, expected: str) -> None:
    assert status.log_tail(text, lines, chars) == expected


def test_conditions_keep_transition_time_when_status_unchanged() -> None:
    first = status.conditions_for([], "Running", "Running", "started", NOW)
    later = NOW + datetime.timedelta(minutes=5)
    again = status.conditions_for(first, "Running", "Running", "still", later)
    assert again[0]["lastTransitionTime"] == times.format_time(NOW)
    assert again[0]["message"] == "still"


def test_conditions_on_final_phase() -> None:
    running = status.conditions_for([], "Running", "Running", "started", NOW)
    done = status.conditions_for(running, "Succeeded", "Completed", "ok", NOW)
    by_type = {c["type"]: c for c in done}
    assert by_type["Succeeded"]["status"] == "True"
    assert by_type["Running"]["status"] == "False"
    assert status.conditions_for([], "Pending", "JobCreated", "x", NOW) == []


@pytest.mark.parametrize(("metrics", "preferred", "expected"), [
    ({"test_accuracy": 0.91234, "accuracy": 0.8}, None, "test_accuracy=0.9123"),
    ({"accuracy": 0.8}, None, "accuracy=0.8"),
    ({"f1": 0.7, "accuracy": 0.8}, "f1", "f1=0.7"),
    ({"loss": 0.3}, None, None),
])
def test_primary_metric(metrics: dict[str, float], preferred: str | None, expected: str | None) -> None:
    assert status.primary_metric(metrics, preferred) == expected


@pytest.mark.parametrize(("conditions", "finished"), [
    ((), False), ((("Complete", ""),), True), ((("Failed", "DeadlineExceeded"),), True),
    ((("FailureTarget", "x"),), False), ((("Suspended", "x"),), False)])
def test_job_finished(conditions: tuple[tuple[str, str], ...], finished: bool) -> None:
    assert status.job_finished(job(*conditions)) is finished


def test_image_id_is_the_newest_pods_digest() -> None:
    old, new = pod(RUNNING, created=60, name="old"), pod(RUNNING, created=5, name="new")
    old["status"]["containerStatuses"][0]["imageID"] = "docker.io/library/t@sha256:" + "a" * 64
    new["status"]["containerStatuses"][0]["imageID"] = "docker.io/library/t@sha256:" + "b" * 64
    assert status.observe(job(), [old, new], NOW, LIMITS).image_id == "docker.io/library/t@sha256:" + "b" * 64
    new["status"]["containerStatuses"][0]["imageID"] = ""  # not pulled yet: the older pod's still counts
    assert status.image_id([new, old]) == "docker.io/library/t@sha256:" + "a" * 64
    assert status.observe(job(), [pod(waiting("ContainerCreating"), phase="Pending")], NOW, LIMITS).image_id is None
