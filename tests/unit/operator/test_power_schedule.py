"""The power rule, table-driven: time zones, DST changes, weekdays, cross-midnight windows, manual,
run and idle events. The clock is always passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kto_operator.power.schedule import (
    DEFAULT,
    IDLE,
    MANUAL,
    OFF,
    ON,
    RUNS_WAITING,
    SCHEDULE,
    SLEEP_DEFERRED,
    SLEEP_REQUESTED,
    WAKE_REQUESTED,
    WOKEN_BY_RUN,
    History,
    PowerSpec,
    SpecError,
    SwitchEvent,
    decide,
    parse_duration,
)

CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def t(text: str, tz: str = "UTC", fold: int = 0) -> datetime:
    """'2026-03-27 12:00' in a zone -> aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz), fold=fold)


def z(text: str) -> datetime:
    return t(text, "UTC")


OFFICE_PARIS = {"schedule": {"on": "0 8 * * 1-5", "off": "0 19 * * 1-5", "timezone": "Europe/Paris"}}
NIGHTLY = {"schedule": {"on": "0 22 * * *", "off": "0 6 * * *"}}  # a window across midnight (UTC)
PARIS_230 = {"schedule": {"on": "30 2 * * *", "off": "0 5 * * *", "timezone": "Europe/Paris"}}
NY_OFF_230 = {"schedule": {"on": "0 1 * * *", "off": "30 2 * * *", "timezone": "America/New_York"}}


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict[str, Any]
    now: datetime
    desired: str
    reason: str
    next_on: datetime | None = None
    next_off: datetime | None = None
    manual: tuple[SwitchEvent, ...] = ()
    runs: tuple[str, ...] = ()
    activity: datetime | None = None
    current: str | None = ON
    deferred: tuple[str, ...] = ()
    check_next: bool = True
    problems: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("no event: on", {"wakeOnRun": True}, z("2026-03-27 12:00"), ON, DEFAULT),
    # Weekdays, Europe/Paris (CET +1 until 2026-03-29, then CEST +2).
    Case("paris friday noon", OFFICE_PARIS, t("2026-03-27 12:00", "Europe/Paris"), ON, SCHEDULE,
         next_on=z("2026-03-30 06:00"), next_off=z("2026-03-27 18:00")),
    Case("paris friday evening", OFFICE_PARIS, t("2026-03-27 20:00", "Europe/Paris"), OFF, SCHEDULE,
         next_on=z("2026-03-30 06:00"), next_off=z("2026-03-30 17:00")),
    Case("paris saturday noon: weekend off", OFFICE_PARIS, t("2026-03-28 12:00", "Europe/Paris"), OFF,
         SCHEDULE, next_on=z("2026-03-30 06:00"), next_off=z("2026-03-30 17:00")),
    Case("paris monday 07:59 after DST", OFFICE_PARIS, t("2026-03-30 07:59", "Europe/Paris"), OFF, SCHEDULE,
         next_on=z("2026-03-30 06:00"), next_off=z("2026-03-30 17:00")),
    Case("paris monday 08:00 sharp: the fire counts", OFFICE_PARIS, t("2026-03-30 08:00", "Europe/Paris"),
         ON, SCHEDULE, next_on=z("2026-03-31 06:00"), next_off=z("2026-03-30 17:00")),
    # One instant, three zones.
    Case("same instant in New York: 08:00 on", {"schedule": {**OFFICE_PARIS["schedule"],
         "timezone": "America/New_York"}}, z("2026-06-10 12:00"), ON, SCHEDULE,
         next_on=z("2026-06-11 12:00"), next_off=z("2026-06-10 23:00")),
    Case("same instant in Tokyo: 21:00 off", {"schedule": {**OFFICE_PARIS["schedule"],
         "timezone": "Asia/Tokyo"}}, z("2026-06-10 12:00"), OFF, SCHEDULE,
         next_on=z("2026-06-10 23:00"), next_off=z("2026-06-11 10:00")),
    Case("same instant in Kolkata (+05:30): 17:30 on", {"schedule": {**OFFICE_PARIS["schedule"],
         "timezone": "Asia/Kolkata"}}, z("2026-06-10 12:00"), ON, SCHEDULE,
         next_on=z("2026-06-11 02:30"), next_off=z("2026-06-10 13:30")),
    # Cross-midnight window (on 22:00, off 06:00).
    Case("nightly window 23:00", NIGHTLY, z("2026-05-05 23:00"), ON, SCHEDULE,
         next_on=z("2026-05-06 22:00"), next_off=z("2026-05-06 06:00")),
    Case("nightly window 03:00", NIGHTLY, z("2026-05-06 03:00"), ON, SCHEDULE,
         next_on=z("2026-05-06 22:00"), next_off=z("2026-05-06 06:00")),
    Case("nightly window 07:00", NIGHTLY, z("2026-05-06 07:00"), OFF, SCHEDULE,
         next_on=z("2026-05-06 22:00"), next_off=z("2026-05-07 06:00")),
    Case("nightly window 21:59", NIGHTLY, z("2026-05-06 21:59"), OFF, SCHEDULE,
         next_on=z("2026-05-06 22:00"), next_off=z("2026-05-07 06:00")),
    # DST spring forward, Paris 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist, fires at 03:00.
    Case("paris spring forward: before", PARIS_230, z("2026-03-29 00:59"), OFF, SCHEDULE,
         next_on=z("2026-03-29 01:00"), next_off=z("2026-03-29 03:00")),
    Case("paris spring forward: skipped 02:30 fires at 03:00", PARIS_230, z("2026-03-29 01:00"), ON, SCHEDULE,
         next_on=z("2026-03-30 00:30"), next_off=z("2026-03-29 03:00")),
    # DST fall back, Paris 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice, fires once (the first).
    Case("paris fall back: first 02:20", PARIS_230, z("2026-10-25 00:20"), OFF, SCHEDULE,
         next_on=z("2026-10-25 00:30"), next_off=z("2026-10-25 04:00")),
    Case("paris fall back: first 02:31", PARIS_230, z("2026-10-25 00:31"), ON, SCHEDULE,
         next_on=z("2026-10-26 01:30"), next_off=z("2026-10-25 04:00")),
    Case("paris fall back: second 02:20, no second fire", PARIS_230, t("2026-10-25 02:20", "Europe/Paris", 1),
         ON, SCHEDULE, next_on=z("2026-10-26 01:30"), next_off=z("2026-10-25 04:00")),
    Case("paris fall back: second 02:45", PARIS_230, t("2026-10-25 02:45", "Europe/Paris", 1), ON, SCHEDULE,
         next_on=z("2026-10-26 01:30"), next_off=z("2026-10-25 04:00")),
    # DST spring forward, New York 2026-03-08 02:00 EST -> 03:00 EDT: off at 02:30 fires at 03:00 EDT (07:00Z).
    Case("new york spring forward: off fires at 03:00 EDT", NY_OFF_230, z("2026-03-08 06:59"), ON, SCHEDULE,
         next_on=z("2026-03-09 05:00"), next_off=z("2026-03-08 07:00")),
    Case("new york spring forward: off", NY_OFF_230, z("2026-03-08 07:00"), OFF, SCHEDULE,
         next_on=z("2026-03-09 05:00"), next_off=z("2026-03-09 06:30")),
    # Day-of-month / last day / nth weekday.
    Case("last day of month (L)", {"schedule": {"off": "0 20 L * *"}}, z("2026-02-28 20:00"), OFF, SCHEDULE,
         next_on=None, next_off=None),
    Case("first monday (MON#1)", {"schedule": {"on": "0 9 * * MON#1", "off": "0 17 * * *"}},
         z("2026-06-01 10:00"), ON, SCHEDULE, next_on=z("2026-07-06 09:00"), next_off=z("2026-06-01 17:00")),
    Case("yearly off", {"schedule": {"off": "0 0 1 1 *"}}, z("2026-07-01 00:00"), OFF, SCHEDULE),
    # Manual switch: the latest event wins.
    Case("manual off at creation", {"state": "off"}, z("2026-05-05 12:00"), OFF, MANUAL,
         manual=(SwitchEvent(OFF, CREATED, MANUAL),)),
    Case("manual off after the morning fire", OFFICE_PARIS, t("2026-06-10 11:00", "Europe/Paris"), OFF, MANUAL,
         manual=(SwitchEvent(OFF, t("2026-06-10 10:00", "Europe/Paris"), MANUAL),),
         next_on=z("2026-06-11 06:00"), next_off=z("2026-06-11 17:00")),
    Case("manual off before the morning fire: schedule wins", OFFICE_PARIS, t("2026-06-10 09:00", "Europe/Paris"),
         ON, SCHEDULE, manual=(SwitchEvent(OFF, t("2026-06-10 07:00", "Europe/Paris"), MANUAL),),
         next_on=z("2026-06-11 06:00"), next_off=z("2026-06-10 17:00")),
    Case("manual on in the evening holds to next off", OFFICE_PARIS, t("2026-06-10 21:00", "Europe/Paris"),
         ON, MANUAL, manual=(SwitchEvent(ON, t("2026-06-10 20:00", "Europe/Paris"), MANUAL),),
         next_on=z("2026-06-12 06:00"), next_off=z("2026-06-11 17:00")),
    Case("tie at one instant: manual beats schedule", OFFICE_PARIS, t("2026-06-10 08:00", "Europe/Paris"),
         OFF, MANUAL, manual=(SwitchEvent(OFF, t("2026-06-10 08:00", "Europe/Paris"), MANUAL),),
         check_next=False),
    Case("wake requested by annotation", OFFICE_PARIS, t("2026-06-13 10:00", "Europe/Paris"), ON, WAKE_REQUESTED,
         manual=(SwitchEvent(ON, t("2026-06-13 09:00", "Europe/Paris"), WAKE_REQUESTED),),
         next_on=z("2026-06-16 06:00"), next_off=z("2026-06-15 17:00")),
    Case("sleep requested beats an older manual on", {"state": "on"}, z("2026-06-13 10:00"), OFF, SLEEP_REQUESTED,
         manual=(SwitchEvent(ON, CREATED, MANUAL), SwitchEvent(OFF, z("2026-06-13 09:00"), SLEEP_REQUESTED))),
    # Idle.
    Case("idle: 29 min after manual on", {"state": "on", "idleAfter": "30m"}, z("2026-06-10 09:29"), ON, MANUAL,
         manual=(SwitchEvent(ON, z("2026-06-10 09:00"), MANUAL),), next_off=z("2026-06-10 09:30")),
    Case("idle: 30 min after manual on", {"state": "on", "idleAfter": "30m"}, z("2026-06-10 09:30"), OFF, IDLE,
         manual=(SwitchEvent(ON, z("2026-06-10 09:00"), MANUAL),)),
    Case("idle clock restarts at the run's end", {"state": "on", "idleAfter": "30m"}, z("2026-06-10 10:30"),
         ON, MANUAL, manual=(SwitchEvent(ON, z("2026-06-10 09:00"), MANUAL),), activity=z("2026-06-10 10:20"),
         next_off=z("2026-06-10 10:50")),
    Case("no idle sleep while a run is active", {"state": "on", "idleAfter": "30m"}, z("2026-06-10 12:00"),
         ON, MANUAL, manual=(SwitchEvent(ON, z("2026-06-10 09:00"), MANUAL),), runs=("r1",)),
    Case("idle after the scheduled wake", {"schedule": {"on": "0 8 * * *"}, "idleAfter": "2h"},
         z("2026-06-10 10:00"), OFF, IDLE, next_on=z("2026-06-11 08:00"), next_off=z("2026-06-11 10:00")),
    Case("idle from creation with no event", {"idleAfter": "1h30m"}, CREATED + timedelta(minutes=89), ON, DEFAULT,
         next_off=CREATED + timedelta(minutes=90)),
    # Runs overlay.
    Case("sleep deferred by a run", OFFICE_PARIS, t("2026-06-10 19:05", "Europe/Paris"), ON, SLEEP_DEFERRED,
         runs=("r2", "r1"), deferred=("r1", "r2"), next_on=None, next_off=None),
    Case("sleep deferred while going to sleep", OFFICE_PARIS, t("2026-06-10 19:05", "Europe/Paris"), ON,
         SLEEP_DEFERRED, runs=("r1",), deferred=("r1",), current="GoingToSleep", check_next=False),
    Case("asleep + run: woken", OFFICE_PARIS, t("2026-06-10 22:00", "Europe/Paris"), ON, WOKEN_BY_RUN,
         runs=("r1",), deferred=("r1",), current=OFF, check_next=False),
    Case("asleep + run + wakeOnRun false: waits", {**OFFICE_PARIS, "wakeOnRun": False},
         t("2026-06-10 22:00", "Europe/Paris"), OFF, RUNS_WAITING, runs=("r1",), current=OFF,
         next_on=z("2026-06-11 06:00"), next_off=None),
    Case("awake + run + wakeOnRun false: still deferred", {**OFFICE_PARIS, "wakeOnRun": False},
         t("2026-06-10 22:00", "Europe/Paris"), ON, SLEEP_DEFERRED, runs=("r1",), deferred=("r1",), current=ON,
         check_next=False),
    # Invalid schedule parts are ignored (and reported); the rest of the rule still applies.
    Case("unknown time zone", {"state": "off", "schedule": {"on": "0 8 * * *", "timezone": "Mars/Olympus"}},
         z("2026-06-10 09:00"), OFF, MANUAL, manual=(SwitchEvent(OFF, CREATED, MANUAL),), problems=1),
    Case("minute 61", {"schedule": {"on": "61 8 * * *", "off": "0 19 * * *"}}, z("2026-06-10 20:00"), OFF,
         SCHEDULE, problems=1, check_next=False),
    Case("six fields", {"schedule": {"on": "0 0 8 * * *"}}, z("2026-06-10 20:00"), ON, DEFAULT, problems=1),
    Case("four fields", {"schedule": {"off": "0 8 * *"}}, z("2026-06-10 20:00"), ON, DEFAULT, problems=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule(case: Case) -> None:
    spec = PowerSpec.from_dict(case.spec)
    hist = History(CREATED, case.manual, case.runs, case.activity, case.current)
    d = decide(spec, hist, case.now)
    assert (d.desired, d.reason) == (case.desired, case.reason), d.message
    assert d.deferred_by == case.deferred
    assert len(d.problems) == case.problems, d.problems
    if case.check_next:
        assert d.next_on == case.next_on, d.next_on
        assert d.next_off == case.next_off, d.next_off


def test_rule_is_pure_and_needs_an_aware_clock() -> None:
    spec, hist = PowerSpec.from_dict(OFFICE_PARIS), History(CREATED)
    now = t("2026-06-10 12:00", "Europe/Paris")
    assert decide(spec, hist, now) == decide(spec, hist, now)
    with pytest.raises(ValueError):
        decide(spec, hist, datetime(2026, 6, 10, 12))


def test_recheck_is_the_next_clock_edge() -> None:
    d = decide(PowerSpec.from_dict(OFFICE_PARIS), History(CREATED), t("2026-06-10 12:00", "Europe/Paris"))
    assert d.recheck_at == z("2026-06-10 17:00")


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("1h30m", timedelta(minutes=90)),
    ("45s", timedelta(seconds=45)), ("1h0m5s", timedelta(hours=1, seconds=5)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "m", "1d", "30m2h", "-5m", "1.5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_duration(text)


ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo",
         "Asia/Kolkata", "Pacific/Auckland"]


@settings(max_examples=150, deadline=None)
@given(zone=st.sampled_from(ZONES), minutes=st.integers(0, 2 * 366 * 24 * 60))
def test_office_hours_match_the_local_clock(zone: str, minutes: int) -> None:
    """Weekdays 08:00-18:00 local: the rule agrees with the wall clock, in every zone, all year round."""
    spec = PowerSpec.from_dict({"schedule": {"on": "0 8 * * 1-5", "off": "0 18 * * 1-5", "timezone": zone}})
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    local = now.astimezone(ZoneInfo(zone))
    expected = ON if local.weekday() < 5 and 8 <= local.hour < 18 else OFF
    d = decide(spec, History(CREATED), now)
    assert d.desired == expected
    # nextOn / nextOff are real switches of the same rule.
    for edge, state in ((d.next_on, ON), (d.next_off, OFF)):
        assert edge is not None and edge > now
        assert decide(spec, History(CREATED), edge).desired == state
        assert decide(spec, History(CREATED), edge - timedelta(minutes=1)).desired != state or edge == (
            d.next_on if state == OFF else d.next_off)


@settings(max_examples=100, deadline=None)
@given(minutes=st.integers(0, 366 * 24 * 60), idle=st.integers(1, 600))
def test_idle_sleeps_exactly_idle_after_the_wake(minutes: int, idle: int) -> None:
    """Woken by hand, no run: Off (Idle) exactly idleAfter later, unless the nightly off came first."""
    spec = PowerSpec.from_dict({"state": "on", "idleAfter": f"{idle}m", "schedule": {"off": "0 3 * * *"}})
    woke = datetime(2026, 1, 1, 4, tzinfo=UTC) + timedelta(minutes=minutes)
    sleep_at = woke + timedelta(minutes=idle)
    hist = History(CREATED, (SwitchEvent(ON, woke, MANUAL),))
    at = decide(spec, hist, sleep_at)
    assert (at.desired, at.reason) == (OFF, IDLE)
    before = decide(spec, hist, sleep_at - timedelta(seconds=1))
    night = woke.replace(hour=3, minute=0, second=0) + timedelta(days=1 if woke.hour >= 3 else 0)
    if night < sleep_at:
        assert (before.desired, before.reason) == (OFF, SCHEDULE)
    else:
        assert (before.desired, before.next_off) == (ON, sleep_at)
