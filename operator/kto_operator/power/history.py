"""Build the rule's "events so far" from a PowerSchedule object and the namespace's TrainingRuns.

Pure functions on plain dicts. What the cluster does not remember by itself (when spec.state last
changed, when the last run ended) is recorded in the PowerSchedule's status, so a restarted operator
decides exactly as the one before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kto_operator import naming
from kto_operator.power.schedule import (
    MANUAL,
    OFF,
    ON,
    SLEEP_REQUESTED,
    WAKE_REQUESTED,
    History,
    SwitchEvent,
)
from kto_operator.status import TERMINAL_PHASES
from kto_operator.times import format_time, parse_time


def is_active(run: Mapping[str, Any]) -> bool:
    """An active run: not in a final phase and not being deleted (a new run has no phase yet: active)."""
    if (run.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (run.get("status") or {}).get("phase") not in TERMINAL_PHASES


def summary(run: Mapping[str, Any]) -> dict[str, Any]:
    """What the power rule reads of a TrainingRun (is_active, last_run_activity): the power half's index entry."""
    meta, status = run.get("metadata") or {}, run.get("status") or {}
    keep = ("name", "creationTimestamp", "deletionTimestamp")
    return {"metadata": {k: meta[k] for k in keep if k in meta},
            "status": {k: status[k] for k in ("phase", "completionTime") if k in status}}


def active_runs(runs: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(sorted(r["metadata"]["name"] for r in runs if is_active(r)))


def last_run_activity(
    runs: Iterable[Mapping[str, Any]], recorded: datetime | None, was_active: bool, active: bool, now: datetime
) -> datetime | None:
    """The latest moment a run was known active: now if runs just ended, run creation/completion times."""
    times = [t for t in (recorded,) if t is not None]
    if was_active and not active:
        times.append(now)
    for r in runs:
        for t in (
            parse_time((r.get("metadata") or {}).get("creationTimestamp")),
            parse_time((r.get("status") or {}).get("completionTime")),
        ):
            if t is not None and t <= now:
                times.append(t)
    return max(times, default=None)


@dataclass(frozen=True)
class ManualState:
    events: tuple[SwitchEvent, ...]
    status_manual: dict[str, str] | None  # what status.manual must hold
    problems: tuple[str, ...]


def manual_state(
    spec: Mapping[str, Any], status: Mapping[str, Any], annotations: Mapping[str, str],
    created: datetime, now: datetime,
) -> ManualState:
    """Manual switch events: spec.state (its time kept in status.manual) and the one-shot annotations."""
    events: list[SwitchEvent] = []
    problems: list[str] = []
    recorded = status.get("manual") or None
    state = spec.get("state")
    status_manual: dict[str, str] | None = None
    if isinstance(state, str) and state.lower() in ("on", "off"):
        state = state.lower()
        if recorded and recorded.get("state") == state and parse_time(recorded.get("at")):
            at = parse_time(recorded["at"])
        elif not status.get("state"):
            at = created  # set at creation: the switch dates from the object's creation
        else:
            at = now  # changed since the last pass
        assert at is not None
        status_manual = {"state": state, "at": format_time(at) or ""}
        events.append(SwitchEvent(ON if state == "on" else OFF, at, MANUAL))
    for key, st, source in ((naming.ANNOTATION_WAKE_REQUESTED_AT, ON, WAKE_REQUESTED),
                            (naming.ANNOTATION_SLEEP_REQUESTED_AT, OFF, SLEEP_REQUESTED)):
        if key in annotations:
            t = parse_time(annotations[key])
            if t is None:
                problems.append(f"annotation {key}={annotations[key]!r} is not an RFC 3339 time")
            else:
                events.append(SwitchEvent(st, t, source))
    return ManualState(tuple(events), status_manual, tuple(problems))


def build_history(
    power: Mapping[str, Any], runs: Iterable[Mapping[str, Any]], now: datetime
) -> tuple[History, ManualState, datetime | None]:
    """History for `decide`, the manual state to record, and the run activity time to record."""
    meta, status = power.get("metadata") or {}, power.get("status") or {}
    created = parse_time(meta.get("creationTimestamp")) or now
    manual = manual_state(power.get("spec") or {}, status, meta.get("annotations") or {}, created, now)
    runs = list(runs)
    active = active_runs(runs)
    activity = last_run_activity(
        runs, parse_time(status.get("lastRunActivity")), bool(status.get("activeRuns")), bool(active), now
    )
    hist = History(created, manual.events, active, activity, status.get("state"))
    return hist, manual, activity
