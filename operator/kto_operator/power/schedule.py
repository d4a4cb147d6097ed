"""The power rule: a pure function of (spec, events so far, now) -> desired state.

The rule (also in the CRD descriptions and power/README.md):

1. Base state: the latest *switch event* at or before ``now`` wins.
   - manual: ``spec.state`` set or changed (the time is recorded in ``status.manual``), or a one-shot
     annotation ``kto.dev/wake-requested-at`` / ``kto.dev/sleep-requested-at`` (an RFC 3339 time);
   - schedule: the most recent fire of ``schedule.on`` (-> On) or ``schedule.off`` (-> Off), evaluated in
     ``schedule.timezone`` with Debian cron's DST behaviour (a time skipped by a spring-forward fires
     at the first valid minute after it; a time repeated by a fall-back fires once);
   - idle: with ``idleAfter`` set and no active TrainingRun, an Off event at
     ``max(created, last On event, last run activity) + idleAfter``.
   Ties at one instant: manual beats idle beats schedule; within one source Off beats On.
   No event at all -> On (reason ``Default``): creating a PowerSchedule never switches a platform off
   by surprise.
2. Runs overlay: the platform is never put to sleep while a TrainingRun is active.
   - base Off, platform On or GoingToSleep -> stays On (``SleepDeferred``, ``deferredBy`` = the runs);
   - base Off, platform Off or WakingUp, ``wakeOnRun`` -> On (``WokenByRun``);
   - base Off, platform asleep, ``wakeOnRun: false`` -> stays Off (``RunsWaitingForWake``).
   When the last run ends the base applies again: a deferred or run-woken platform goes back to sleep
   then, unless the base is an idle Off, whose clock restarts at the run's end (so ``idleAfter`` later).

Times are timezone-aware datetimes; everything here is deterministic given its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from kto_operator.times import format_time

ON = "On"
OFF = "Off"
WAKING_UP = "WakingUp"
GOING_TO_SLEEP = "GoingToSleep"
STATES = (ON, OFF, WAKING_UP, GOING_TO_SLEEP)

# Reasons (status.reason and Event reasons).
DEFAULT = "Default"
MANUAL = "Manual"
WAKE_REQUESTED = "WakeRequested"
SLEEP_REQUESTED = "SleepRequested"
SCHEDULE = "Schedule"
IDLE = "Idle"
SLEEP_DEFERRED = "SleepDeferred"
WOKEN_BY_RUN = "WokenByRun"
RUNS_WAITING = "RunsWaitingForWake"

# Priority of sources at one instant (higher wins).
_PRIORITY = {SCHEDULE: 1, IDLE: 2, MANUAL: 3, WAKE_REQUESTED: 3, SLEEP_REQUESTED: 3}

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")
# How far ahead next_on/next_off are searched, and how many edges are walked at most.
HORIZON = timedelta(days=400)
_MAX_EDGES = 256


class SpecError(ValueError):
    """A spec value the API server could not reject (CEL cannot judge it)."""


def parse_duration(text: str) -> timedelta:
    """'30m', '2h', '1h30m', '45s' -> timedelta (a subset of Go's durations, as the CRD's CEL allows)."""
    m = _DURATION.match(text.strip()) if text else None
    if not m or not any(m.groups()):
        raise SpecError(f"idleAfter {text!r} is not a duration like 30m, 2h or 1h30m")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s)


@dataclass(frozen=True)
class ScheduleSpec:
    on: str | None = None
    off: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class PowerSpec:
    state: str | None = None  # "on" | "off" | None (no manual switch)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    idle_after: timedelta | None = None
    wake_on_run: bool = True

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PowerSpec:
        """Parse a PowerSchedule ``spec``; raises SpecError for an idleAfter CEL would have let through."""
        sched = spec.get("schedule") or {}
        idle = spec.get("idleAfter")
        state = spec.get("state")
        return cls(
            state=state.lower() if isinstance(state, str) else None,
            schedule=ScheduleSpec(
                on=sched.get("on") or None,
                off=sched.get("off") or None,
                timezone=sched.get("timezone") or "UTC",
            ),
            idle_after=parse_duration(idle) if idle else None,
            wake_on_run=bool(spec.get("wakeOnRun", True)),
        )


@dataclass(frozen=True)
class SwitchEvent:
    state: str  # ON | OFF
    at: datetime
    source: str  # MANUAL | WAKE_REQUESTED | SLEEP_REQUESTED | SCHEDULE | IDLE


@dataclass(frozen=True)
class History:
    """The events so far, as recorded by the operator (status) and the cluster (runs)."""

    created: datetime
    manual: tuple[SwitchEvent, ...] = ()
    active_runs: tuple[str, ...] = ()
    last_run_activity: datetime | None = None
    current: str | None = None  # the platform's actual state (status.state), None before the first pass


@dataclass(frozen=True)
class Decision:
    desired: str  # ON | OFF
    reason: str
    message: str
    deferred_by: tuple[str, ...] = ()
    next_on: datetime | None = None
    next_off: datetime | None = None
    recheck_at: datetime | None = None  # the next instant a clock edge may change the decision
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cron:
    expr: str
    tz: ZoneInfo
    state: str

    def fires_after(self, after: datetime) -> Iterator[datetime]:
        """Fires strictly after ``after``, in order (cronsim may repeat a fold=0 time on a fall-back)."""
        # Results are returned in UTC: an aware time in a DST fold compares unequal (==) to any time
        # in another zone (PEP 495), so mixing zones would break equality.
        after = after.astimezone(UTC)
        for local in CronSim(self.expr, after.astimezone(self.tz)):
            t = local.astimezone(UTC)
            if t > after:
                yield t

    def next_after(self, after: datetime) -> datetime | None:
        for t in self.fires_after(after):
            return t if t - after <= HORIZON else None
        return None

    def last_at_or_before(self, now: datetime) -> datetime | None:
        """The latest fire <= now. Reverse iteration is approximate around DST folds, so correct forward.

        Comparisons are made in UTC: two times of one zone compare by wall clock, ignoring the fold.
        """
        now = now.astimezone(UTC)
        try:
            prev = next(CronSim(self.expr, now.astimezone(self.tz), reverse=True)).astimezone(UTC)
        except StopIteration:
            return None
        for local in CronSim(self.expr, prev.astimezone(self.tz)):
            t = local.astimezone(UTC)
            if t > now:
                break
            prev = max(prev, t)
        return prev if prev <= now else None


def compile_crons(sched: ScheduleSpec, now: datetime) -> tuple[tuple[Cron, ...], tuple[str, ...]]:
    """Cron objects for the valid parts of the schedule, and a message for each invalid part."""
    problems: list[str] = []
    try:
        tz = ZoneInfo(sched.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return (), (f"schedule.timezone {sched.timezone!r} is not an IANA time zone",)
    crons: list[Cron] = []
    for key, expr, state in (("on", sched.on, ON), ("off", sched.off, OFF)):
        if not expr:
            continue
        fields = expr.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            problems.append(f"schedule.{key} {expr!r}: a cron expression has 5 fields")
            continue
        try:
            CronSim(expr, now.astimezone(tz))
        except (CronSimError, ValueError) as err:
            problems.append(f"schedule.{key} {expr!r}: {err}")
            continue
        crons.append(Cron(" ".join(fields), tz, state))
    return tuple(crons), tuple(problems)


def _latest(events: list[SwitchEvent]) -> SwitchEvent | None:
    # Later wins; at one instant the higher-priority source, then Off over On.
    return max(events, key=lambda e: (e.at, _PRIORITY[e.source], e.state == OFF), default=None)


def _clock_events(
    spec: PowerSpec, hist: History, crons: tuple[Cron, ...], now: datetime
) -> tuple[list[SwitchEvent], datetime | None]:
    """Switch events at or before ``now`` (manual, schedule, idle) and the pending idle time."""
    events = [e for e in hist.manual if e.at <= now]
    for cron in crons:
        t = cron.last_at_or_before(now)
        if t is not None:
            events.append(SwitchEvent(cron.state, t, SCHEDULE))
    idle_at = None
    if spec.idle_after is not None and not hist.active_runs:
        anchors = [hist.created] + [e.at for e in events if e.state == ON]
        if hist.last_run_activity is not None:
            anchors.append(hist.last_run_activity)
        idle_at = max(anchors) + spec.idle_after
        if idle_at <= now:
            events.append(SwitchEvent(OFF, idle_at, IDLE))
    return events, idle_at


def _describe(ev: SwitchEvent | None, spec: PowerSpec) -> str:
    if ev is None:
        return "no switch event yet: the platform stays on"
    if ev.source == MANUAL:
        return f"spec.state is {ev.state.lower()} (since {format_time(ev.at)})"
    if ev.source in (WAKE_REQUESTED, SLEEP_REQUESTED):
        return f"{ev.source} at {format_time(ev.at)}"
    if ev.source == SCHEDULE:
        key = "on" if ev.state == ON else "off"
        local = ev.at.astimezone(ZoneInfo(spec.schedule.timezone)).isoformat()
        return f"schedule.{key} fired at {local} ({spec.schedule.timezone})"
    idle = spec.idle_after or timedelta(0)
    return f"no active TrainingRun for {idle} (since {format_time(ev.at - idle)}): idle"


def _state_at(
    spec: PowerSpec, hist: History, crons: tuple[Cron, ...], now: datetime
) -> tuple[str, str, str, tuple[str, ...], datetime | None]:
    """(desired, reason, message, deferred_by, pending idle time) at ``now``."""
    events, idle_at = _clock_events(spec, hist, crons, now)
    ev = _latest(events)
    base = ev.state if ev else ON
    reason = ev.source if ev else DEFAULT
    message = _describe(ev, spec)
    runs = tuple(sorted(hist.active_runs))
    if base == OFF and runs:
        names = ", ".join(runs)
        if hist.current in (ON, GOING_TO_SLEEP, None):
            return ON, SLEEP_DEFERRED, f"{message}; sleep deferred by active runs: {names}", runs, idle_at
        if spec.wake_on_run:
            return ON, WOKEN_BY_RUN, f"woken for runs: {names} ({message})", runs, idle_at
        return OFF, RUNS_WAITING, f"{message}; runs wait for a manual wake (wakeOnRun is false): {names}", \
            (), idle_at
    return base, reason, message, (), idle_at


def _next_edge(
    crons: tuple[Cron, ...], manual: tuple[SwitchEvent, ...], idle_at: datetime | None, after: datetime
) -> datetime | None:
    candidates = [t for c in crons if (t := c.next_after(after)) is not None]
    candidates += [e.at for e in manual if e.at > after]
    if idle_at is not None and idle_at > after:
        candidates.append(idle_at)
    return min(candidates, default=None)


def decide(spec: PowerSpec, hist: History, now: datetime) -> Decision:
    """The desired platform state at ``now``, why, and when the clock will next switch it."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    crons, problems = compile_crons(spec.schedule, now)
    desired, reason, message, deferred, idle_at = _state_at(spec, hist, crons, now)

    # Walk the clock edges ahead, assuming no new run or manual event and today's runs still active,
    # to find the first switch to On and to Off.
    # Stop as soon as the switches that can still happen are found (a yearly cron would walk far).
    future_manual = {e.state for e in hist.manual if e.at > now}
    held_on = bool(hist.active_runs) and (desired == ON or spec.wake_on_run)
    can_on = not held_on and (ON in future_manual or any(c.state == ON for c in crons))
    can_off = not hist.active_runs and (
        OFF in future_manual or spec.idle_after is not None or any(c.state == OFF for c in crons))
    # A switch back needs a switch out first.
    can_off = can_off and (desired == ON or can_on)
    can_on = can_on and (desired == OFF or can_off)
    next_on = next_off = None
    recheck = _next_edge(crons, hist.manual, idle_at, now)
    t, state, steps = recheck, desired, 0
    sim = History(hist.created, hist.manual, hist.active_runs, hist.last_run_activity, desired)
    while (t is not None and steps < _MAX_EDGES and t - now <= HORIZON
           and ((can_on and next_on is None) or (can_off and next_off is None))):
        steps += 1
        new, _, _, _, idle_t = _state_at(spec, sim, crons, t)
        if new != state:
            if new == ON and next_on is None:
                next_on = t
            if new == OFF and next_off is None:
                next_off = t
            state = new
            sim = History(hist.created, hist.manual, hist.active_runs, hist.last_run_activity, new)
        t = _next_edge(crons, hist.manual, idle_t, t)
    return Decision(desired, reason, message, deferred, next_on, next_off, recheck, problems)
