"""Pure mapping from a Job and its pods to the TrainingRun's phase, reason and message.

No API calls here: the reconciler fetches the objects, this module decides, unit tests cover each case.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import naming
from .times import format_time, parse_time

PENDING = "Pending"
WAITING_FOR_PLATFORM = "WaitingForPlatform"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED, CANCELLED})
# Reason while the Job exists and has no pod yet.
NO_POD = "JobCreated"

# Waiting reasons that never heal by themselves often enough to wait for (Kubeflow #2001: stuck forever).
IMAGE_PULL_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
)
# Waiting reasons shown while Pending (e.g. a missing Secret) that a user can fix without a new run.
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError"})

# MLflow run status for each final phase.
MLFLOW_STATUS = {SUCCEEDED: "FINISHED", FAILED: "FAILED", CANCELLED: "KILLED"}


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the Job and its pods say about the run."""

    phase: str
    reason: str
    message: str
    start_time: str | None = None
    # The Job must be deleted to stop it (fail-fast cases the Job controller would retry forever).
    stop_job: bool = False
    # The trainer image by digest, once a pod has pulled it (containerStatuses[].imageID).
    image_id: str | None = None
    # Workers ready of workers asked for, "k/N" (status.workers; see workers.observe).
    workers: str | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclasses.dataclass(frozen=True)
class Limits:
    """Knobs of the mapping (from OperatorSettings)."""

    fail_fast_seconds: float = 30.0
    log_tail_lines: int = 20
    message_max_chars: int = 2048


def log_tail(text: str | None, lines: int, max_chars: int) -> str:
    """The last `lines` lines of `text`, cut to `max_chars` from the end (the end has the error)."""
    if not text:
        return ""
    tail = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return tail if len(tail) <= max_chars else "…" + tail[-(max_chars - 1) :]


def true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def trainer_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == naming.CONTAINER_NAME:
            return status
    return statuses[0] if statuses else {}


def _newest_first(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def _memory_limit(pod: Mapping[str, Any]) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == naming.CONTAINER_NAME:
            return ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def failure_from_pods(pods: Sequence[Mapping[str, Any]], limits: Limits) -> tuple[str, str] | None:
    """(reason, message) of the newest pod whose trainer terminated with an error."""
    for pod in _newest_first(pods):
        terminated = (trainer_status(pod).get("state") or {}).get("terminated") or (
            trainer_status(pod).get("lastState") or {}
        ).get("terminated")
        tail = ""
        if terminated:
            tail = log_tail(terminated.get("message"), limits.log_tail_lines, limits.message_max_chars)
            code = terminated.get("exitCode")
            if terminated.get("reason") == "OOMKilled":
                limit = _memory_limit(pod)
                detail = f" (memory limit {limit})" if limit else ""
                text = f"trainer was killed for exceeding its memory{detail}, exit code {code}"
                return "OOMKilled", _join(text, tail)
            if code not in (None, 0):
                return "ExitCode", _join(f"trainer exited with code {code}", tail)
        pod_status = pod.get("status") or {}
        if pod_status.get("phase") == "Failed" and pod_status.get("reason"):
            detail = str(pod_status.get("message") or f"pod {pod['metadata'].get('name', '')} failed")
            return str(pod_status["reason"]), _join(detail, tail)
    return None


def _job_failure(job: Mapping[str, Any], condition: Mapping[str, Any], pods: Sequence[Mapping[str, Any]],
                 limits: Limits) -> Observation:
    job_reason = str(condition.get("reason") or "JobFailed")
    if job_reason == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        found = failure_from_pods(pods, limits)
        tail = found[1] if found and found[0] == "ExitCode" else ""
        text = f"the run exceeded activeDeadlineSeconds={deadline}"
        return Observation(FAILED, "DeadlineExceeded", _join(text, tail))
    found = failure_from_pods(pods, limits)
    if found:
        return Observation(FAILED, found[0], found[1])
    return Observation(FAILED, job_reason, str(condition.get("message") or "the Job failed"))


def _pod_start(pod: Mapping[str, Any]) -> str | None:
    running = (trainer_status(pod).get("state") or {}).get("running") or {}
    return running.get("startedAt") or (pod.get("status") or {}).get("startTime")


def observe_pod(pod: Mapping[str, Any], now: datetime.datetime, limits: Limits) -> Observation:
    name = pod["metadata"].get("name", "")
    status = pod.get("status") or {}
    state = trainer_status(pod).get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    if reason in IMAGE_PULL_ERRORS:
        since = parse_time(status.get("startTime") or pod["metadata"].get("creationTimestamp")) or now
        waited = (now - since).total_seconds()
        detail = str(waiting.get("message") or "the image cannot be pulled")
        if waited >= limits.fail_fast_seconds:
            message = f"{detail} (gave up after {int(waited)}s; fix spec.image and create a new TrainingRun)"
            return Observation(FAILED, str(reason), message, stop_job=True)
        return Observation(PENDING, str(reason), detail)
    if reason in CONFIG_ERRORS:
        return Observation(PENDING, str(reason), str(waiting.get("message") or reason))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return Observation(PENDING, str(condition.get("reason") or "Unschedulable"),
                               str(condition.get("message") or "the trainer pod cannot be scheduled"))
    if state.get("running"):
        return Observation(RUNNING, "Running", f"trainer running in pod {name}", start_time=_pod_start(pod))
    if state.get("terminated"):
        code = state["terminated"].get("exitCode")
        # The Job controller has not concluded yet (or will retry: backoffLimit > 0).
        return Observation(RUNNING, "PodTerminated", f"pod {name} ended with exit code {code}",
                           start_time=_pod_start(pod))
    return Observation(PENDING, str(reason or "PodPending"), f"pod {name} is starting")


# FailureTarget is not final for us: the Job controller sets it, then stops the pods, then sets Failed.
# Reporting the failure only then means no trainer is left to touch the MLflow run afterwards.
FINAL_JOB_CONDITIONS = ("Complete", "SuccessCriteriaMet", "Failed")


def job_finished(job: Mapping[str, Any]) -> bool:
    """The Job controller has concluded (success or failure)."""
    return any(kind in FINAL_JOB_CONDITIONS for kind in true_conditions(job))


def image_id(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The digest the newest trainer pod runs (or ran): what the run was trained with."""
    for pod in _newest_first(pods):
        found = trainer_status(pod).get("imageID")
        if found:
            return str(found)
    return None


def observe(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime.datetime,
            limits: Limits) -> Observation:
    """The run's phase from its Job (authoritative once finished) and its newest pod (while running)."""
    return dataclasses.replace(_observe(job, pods, now, limits), image_id=image_id(pods))


def _observe(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime.datetime,
             limits: Limits) -> Observation:
    conditions = true_conditions(job)
    start = next((s for s in map(_pod_start, _newest_first(pods)) if s), None)
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return Observation(SUCCEEDED, "Completed", "the trainer finished successfully", start_time=start)
    if "Failed" in conditions:
        return dataclasses.replace(_job_failure(job, conditions["Failed"], pods, limits), start_time=start)
    if "FailureTarget" in conditions:
        why = conditions["FailureTarget"].get("reason") or "the Job failed"
        return Observation(RUNNING, "Stopping", f"{why}: waiting for the trainer pod to stop", start_time=start)
    if "Suspended" in conditions:
        return Observation(PENDING, "Suspended", "the Job is suspended")
    newest = _newest_first(pods)
    if not newest:
        return Observation(PENDING, NO_POD, "waiting for the trainer pod")
    return observe_pod(newest[0], now, limits)


def set_condition(conditions: Sequence[Mapping[str, Any]], type_: str, status: str, reason: str, message: str,
                  now: datetime.datetime) -> list[dict[str, Any]]:
    """`conditions` with one condition replaced; lastTransitionTime only moves when its status changes."""
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != status
        since = format_time(now) if changed else condition.get("lastTransitionTime", format_time(now))
        result.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": since})
    if not found:
        result.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": format_time(now)})
    return result


# Condition types set per phase (Kubeflow-like: Created, Running, then one final type).
CONDITION_FOR_PHASE = {RUNNING: "Running", SUCCEEDED: "Succeeded", FAILED: "Failed", CANCELLED: "Cancelled"}


def conditions_for(conditions: Sequence[Mapping[str, Any]], phase: str, reason: str, message: str,
                   now: datetime.datetime) -> list[dict[str, Any]]:
    """Conditions after entering `phase`: its own condition True, Running False once the run ended."""
    result = [dict(c) for c in conditions]
    type_ = CONDITION_FOR_PHASE.get(phase)
    if type_:
        result = set_condition(result, type_, "True", reason, message[:256], now)
    if phase in TERMINAL_PHASES and any(c.get("type") == "Running" for c in result):
        result = set_condition(result, "Running", "False", reason, "the run ended", now)
    return result


def primary_metric(metrics: Mapping[str, float], preferred: str | None) -> str | None:
    """Text for the Metric printer column: the registerModel metric, else test_accuracy, else accuracy."""
    for key in (preferred, "test_accuracy", "accuracy"):
        if key and key in metrics:
            return f"{key}={metrics[key]:.4g}"
    return None


# Reasons on the ordinary way from the Job's creation to the trainer's end: a change from one to another
# within the same phase is not worth a status write of its own (the next phase follows within seconds; any
# other write carries the latest reason along). A problem reason (Unschedulable, a pull error, a quota
# refusal) is always written, and so is the step out of it.
QUIET_REASONS = frozenset({NO_POD, "PodPending", "ContainerCreating", "PodInitializing", "Running", "PodTerminated"})
# Fields not worth a write of their own while a run waits at a quiet Pending reason (workers ready "0/1" as
# the Job starts its pods): the next write carries them.
QUIET_PENDING_FIELDS = frozenset({"workers"})
# Normal Events within Pending: the run's creation (MLflow run and Job). Other Pending steps are in the status.
ANNOUNCED_REASONS = frozenset({NO_POD})


def status_patch(current: Mapping[str, Any], generation: int | None, phase: str, reason: str, message: str,
                 fields: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any] | None:
    """The one merge patch of the status for this step: the fields that differ, phase/reason/message when
    they changed (unless the change is a quiet one and nothing else is written), conditions on a transition,
    observedGeneration. None when nothing is worth a request."""
    patch: dict[str, Any] = {k: v for k, v in fields.items() if current.get(k) != v}
    before = (current.get("phase"), current.get("reason"))
    moved = before != (phase, reason)
    quiet = before[0] == phase and reason in QUIET_REASONS and before[1] in QUIET_REASONS
    if quiet and phase == PENDING and patch.keys() <= QUIET_PENDING_FIELDS:
        patch = {}
    if (moved or current.get("message") != message) and (patch or not quiet):
        patch.update(phase=phase, reason=reason, message=message)
        if moved:
            patch["conditions"] = conditions_for(current.get("conditions") or [], phase, reason, message, now)
    if not patch and current.get("observedGeneration") == generation:
        return None
    patch["observedGeneration"] = generation
    return patch


def event_type(before: Mapping[str, Any], phase: str, reason: str, warnings: frozenset[str]) -> str | None:
    """The Event type ("Normal", "Warning") a status step is announced with, None for none: the run's
    creation, each phase it enters after Pending, every failure and warning; not the steps within a phase."""
    if (before.get("phase"), before.get("reason")) == (phase, reason):
        return None
    if phase == FAILED or reason in warnings:
        return "Warning"
    if (phase != before.get("phase") and phase != PENDING) or reason in ANNOUNCED_REASONS:
        return "Normal"
    return None
