"""One status patch per step and Events only for the steps worth one (status.status_patch, status.event_type)."""

from __future__ import annotations

import datetime

from kto_operator import status

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
WARNINGS = frozenset({"MlflowUnavailable", "Unschedulable"})


def patch(current: dict[str, object], phase: str, reason: str, message: str = "m",
          **fields: object) -> dict[str, object] | None:
    return status.status_patch(current, 1, phase, reason, message, fields, NOW)


def test_a_transition_is_one_patch_with_its_fields_and_conditions() -> None:
    current = {"phase": "Pending", "reason": "JobCreated", "message": "m", "observedGeneration": 1}
    found = patch(current, "Running", "Running", startTime="t", imageID="sha")
    assert found is not None
    assert (found["phase"], found["reason"], found["startTime"], found["imageID"]) == ("Running", "Running", "t", "sha")
    assert [c["type"] for c in found["conditions"]] == ["Running"]  # type: ignore[union-attr]


def test_nothing_new_is_no_request() -> None:
    current = {"phase": "Running", "reason": "Running", "message": "m", "startTime": "t", "observedGeneration": 1}
    assert patch(current, "Running", "Running", startTime="t") is None


def test_quiet_steps_within_a_phase_are_not_written_alone() -> None:
    current = {"phase": "Pending", "reason": "JobCreated", "message": "m", "observedGeneration": 1}
    assert patch(current, "Pending", "ContainerCreating", "pod is starting") is None
    running = {"phase": "Running", "reason": "Running", "message": "m", "observedGeneration": 1}
    assert patch(running, "Running", "PodTerminated", "ended") is None
    # Carried along when something else is written anyway.
    found = patch(running, "Running", "PodTerminated", "ended", metrics={"loss": 1.0})
    assert found is not None and found["reason"] == "PodTerminated" and "conditions" in found


def test_workers_ready_is_not_written_alone_while_pods_start() -> None:
    current = {"phase": "Pending", "reason": "JobCreated", "message": "m", "observedGeneration": 1}
    assert patch(current, "Pending", "JobCreated", "waiting for the trainer pod", workers="0/1") is None
    found = patch(current, "Running", "Running", workers="1/1")  # carried by the next write
    assert found is not None and found["workers"] == "1/1"
    stuck = {"phase": "Pending", "reason": "Unschedulable", "message": "m", "observedGeneration": 1}
    found = patch(stuck, "Pending", "Unschedulable", "m", workers="0/2")  # not a quiet step: written
    assert found == {"workers": "0/2", "observedGeneration": 1}
    running = {"phase": "Running", "reason": "Running", "message": "m", "observedGeneration": 1, "workers": "2/2"}
    assert patch(running, "Running", "Running", "m", workers="1/2") == {"workers": "1/2", "observedGeneration": 1}


def test_a_problem_and_its_end_are_always_written() -> None:
    current = {"phase": "Pending", "reason": "JobCreated", "message": "m", "observedGeneration": 1}
    found = patch(current, "Pending", "Unschedulable", "0/1 nodes")
    assert found is not None and found["reason"] == "Unschedulable"
    stuck = {"phase": "Pending", "reason": "Unschedulable", "message": "0/1 nodes", "observedGeneration": 1}
    found = patch(stuck, "Pending", "ContainerCreating", "pod is starting")
    assert found is not None and found["reason"] == "ContainerCreating"


def test_a_new_generation_is_acknowledged() -> None:
    current = {"phase": "Running", "reason": "Running", "message": "m", "observedGeneration": 0}
    assert patch(current, "Running", "Running") == {"observedGeneration": 1}


def test_events_for_creation_start_end_and_failures_only() -> None:
    def kind(before: dict[str, str], phase: str, reason: str) -> str | None:
        return status.event_type(before, phase, reason, WARNINGS)

    assert kind({}, "Pending", "CreatingRun") is None
    assert kind({"phase": "Pending", "reason": "CreatingRun"}, "Pending", "JobCreated") == "Normal"
    assert kind({"phase": "Pending", "reason": "JobCreated"}, "Pending", "PodPending") is None
    assert kind({"phase": "Pending", "reason": "JobCreated"}, "Running", "Running") == "Normal"
    assert kind({"phase": "Running", "reason": "Running"}, "Running", "PodTerminated") is None
    assert kind({"phase": "Running", "reason": "Running"}, "Succeeded", "Completed") == "Normal"
    assert kind({"phase": "Running", "reason": "Running"}, "Failed", "ExitCode") == "Warning"
    assert kind({"phase": "Pending", "reason": "JobCreated"}, "Pending", "Unschedulable") == "Warning"
    assert kind({"phase": "Pending", "reason": "MlflowUnavailable"}, "Pending", "MlflowUnavailable") is None
    assert kind({}, "WaitingForPlatform", "WaitingForPlatform") == "Normal"
