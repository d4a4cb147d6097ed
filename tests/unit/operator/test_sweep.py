"""The sweep that replaces per-run timers: which runs are due when, spread over time, and the peering rule."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import itertools
from typing import Any

import httpx
import pytest
from kto_operator import api, sweep, views

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def run(name: str, phase: str | None = None, job: bool = True, cancel: bool = False,
        reason: str | None = None) -> views.RunEntry:
    """A live run as kopf's index holds it (what the sweep reads)."""
    return views.RunEntry(name=name, text="{}", namespace="ns", uid=f"uid-{name}", phase=phase, reason=reason,
                          job_name=name if job else None, cancel=cancel)


def turns(uid: str, interval: float, seconds: int) -> list[int]:
    """The 1 s ticks (0..seconds) at which a run is due."""
    return [t for t in range(1, seconds + 1) if sweep.crossed(uid, interval, t - 1, t)]


@pytest.mark.parametrize("uid", ["a", "b", "0f3c9d2e-1111-2222-3333-444455556666", ""])
@pytest.mark.parametrize("interval", [sweep.FOLLOW_INTERVAL, sweep.RESYNC_INTERVAL])
def test_each_run_is_due_once_per_interval_at_its_own_phase(uid: str, interval: float) -> None:
    due_at = turns(uid, interval, 300)
    assert len(due_at) == 300 // interval
    assert {b - a for a, b in itertools.pairwise(due_at)} == {interval}


def test_a_missed_tick_is_not_lost_and_not_doubled() -> None:
    # A sweep late by 7 s (a busy event loop) still serves every run once, never twice.
    uids = [f"r{i}" for i in range(200)]
    late = [u for u in uids if sweep.crossed(u, sweep.FOLLOW_INTERVAL, 10.0, 17.0)]
    assert late == uids


def test_runs_spread_over_the_interval() -> None:
    per_tick = collections.Counter(t for i in range(1000) for t in turns(f"uid-{i}", sweep.RESYNC_INTERVAL, 15))
    assert sum(per_tick.values()) == 1000
    # Evenly spread: no tick serves more than twice its share (1000 / 15 = 67).
    assert max(per_tick.values()) <= 2 * 1000 / sweep.RESYNC_INTERVAL


def test_running_runs_get_progress_waiting_runs_a_resync_others_nothing() -> None:
    runs = [run("running", "Running"), run("pending", "Pending"), run("done", "Succeeded"),
            run("nojob", "Pending", job=False), run("cancel", "Pending", job=False, cancel=True),
            run("fresh", job=False)]
    seen: dict[tuple[str, bool], int] = collections.Counter()
    for t in range(1, 61):
        for ns, name, progress in sweep.due(runs, t - 1, t):
            assert ns == "ns"
            seen[(name, progress)] += 1
    assert seen == {("running", True): 12, ("pending", False): 4, ("cancel", False): 4}


def test_a_run_whose_pod_was_refused_is_resynced_less_often() -> None:
    refused = run("refused", "Pending", reason="QuotaExceeded")
    seen = [t for t in range(1, 241) if sweep.due([refused], t - 1, t)]
    assert len(seen) == 240 // sweep.REFUSED_INTERVAL and sweep.REFUSED_INTERVAL > sweep.RESYNC_INTERVAL


def peer(priority: int, seen: datetime.datetime, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(("peers", "paused"), [
    ({}, False),
    ({"me": peer(5, NOW)}, False),
    ({"me": peer(5, NOW), "other": peer(9, NOW)}, True),
    ({"me": peer(5, NOW), "other": peer(9, NOW - datetime.timedelta(seconds=61))}, False),  # dead
    ({"me": peer(5, NOW), "other": peer(9, NOW - datetime.timedelta(seconds=30), lifetime=15)}, False),
    ({"me": peer(5, NOW), "other": peer(5, NOW)}, False),  # same priority: kopf warns and goes on
    ({"me": peer(5, NOW), "other": peer(1, NOW)}, False),
    ({"other": {"priority": 9, "lastseen": NOW.replace(tzinfo=None).isoformat()}}, True),  # naive = UTC
    ({"junk": "text", "bad": {"priority": "x", "lastseen": NOW.isoformat()}, "nolastseen": {"priority": 9}}, False),
])
def test_peering_pauses_like_kopf(peers: dict[str, Any], paused: bool) -> None:
    assert sweep.outranked(peers, 5, NOW) is paused


class FakeKube:
    def __init__(self, body: dict[str, Any] | Exception | None) -> None:
        self.body, self.gets = body, 0

    async def get(self, kind: Any, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.gets += 1
        assert (kind, namespace, name) == (api.PEERINGS, "ns", "kto")
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


def sweep_once(kube: FakeKube | None, ticks: list[tuple[float, float]],
               runs: list[views.RunEntry]) -> list[tuple[str, str, bool]]:
    followed: list[tuple[str, str, bool]] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        followed.append((namespace, name, with_progress))

    async def main() -> None:
        peering = sweep.Peering("kto", "ns", 5) if kube is not None else None
        s = sweep.Sweep({("ns", r.name): [r] for r in runs}, follow, kube, peering)
        s.adopt()
        for previous, now in ticks:
            await s.once(previous, now)
            await asyncio.gather(*s.in_flight.values())  # a second apart: each tick's follows are done by the next
            await asyncio.sleep(0)

    asyncio.run(main())
    return followed


def test_the_sweep_follows_due_runs_in_the_background() -> None:
    runs = [run(f"r{i}", "Running") for i in range(20)]
    assert sorted(sweep_once(None, [(0, sweep.FOLLOW_INTERVAL)], runs)) == \
        sorted(("ns", f"r{i}", True) for i in range(20))


def test_a_paused_replica_does_not_sweep_and_asks_the_peering_object_sparingly() -> None:
    runs = [run(f"r{i}", "Running") for i in range(20)]
    ticks = [(t - 1, t) for t in range(1, 11)]
    outranked = FakeKube({"status": {"me": peer(5, datetime.datetime.now(datetime.UTC)),
                                     "boss": peer(9, datetime.datetime.now(datetime.UTC))}})
    assert sweep_once(outranked, ticks, runs) == []
    assert outranked.gets == 2  # 10 s of ticks, one read per PEERING_RECHECK
    leading = FakeKube({"status": {"me": peer(5, datetime.datetime.now(datetime.UTC))}})
    assert len(sweep_once(leading, ticks, runs)) == 40
    unreadable = FakeKube(httpx.ConnectError("refused"))
    assert sweep_once(unreadable, ticks, runs) == []


def test_a_failed_follow_is_logged_and_the_sweep_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        calls.append(name)
        if name == "r0":
            raise api.ApiError(500, "Internal", "etcd timeout")
        if name == "r1":
            raise KeyError("bug")

    async def main() -> None:
        s = sweep.Sweep({("ns", f"r{i}"): [run(f"r{i}", "Running")] for i in range(3)}, follow, None)
        s.adopt()
        await s.once(0, sweep.FOLLOW_INTERVAL)
        await asyncio.gather(*s.in_flight.values(), return_exceptions=True)
        assert not s.in_flight

    asyncio.run(main())
    assert sorted(calls) == ["r0", "r1", "r2"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(warnings) == 1 and "etcd timeout" in warnings[0].getMessage() and warnings[0].exc_info is None
    assert len(errors) == 1 and errors[0].exc_info is not None


MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark")


def test_follows_run_in_the_context_a_handler_lent() -> None:
    """kopf.event needs the context variables kopf sets for its handlers: a follow must see them."""
    seen: list[str | None] = []

    async def follow(namespace: str, name: str, with_progress: bool) -> None:
        seen.append(MARK.get(None))

    async def main() -> None:
        s = sweep.Sweep({("ns", "r"): [run("r", "Running")]}, follow, None)
        await s.once(0, sweep.FOLLOW_INTERVAL)  # no handler ran yet: nothing to lend, nothing followed
        assert not s.in_flight

        async def handler() -> None:
            MARK.set("kopf")
            s.adopt()

        await asyncio.create_task(handler())
        await s.once(0, sweep.FOLLOW_INTERVAL)
        await asyncio.gather(*s.in_flight.values())

    asyncio.run(main())
    assert seen == ["kopf"]


def test_a_run_still_being_followed_is_not_followed_twice() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def slow(namespace: str, name: str, with_progress: bool) -> None:
        started.append(name)
        await release.wait()

    async def main() -> None:
        s = sweep.Sweep({("ns", "r"): [run("r", "Running")]}, slow, None)
        s.adopt()
        for k in range(1, 4):  # three turns of the run while its first follow still waits
            await s.once((k - 1) * sweep.FOLLOW_INTERVAL, k * sweep.FOLLOW_INTERVAL)
            await asyncio.sleep(0)
        assert started == ["r"] and len(s.in_flight) == 1
        release.set()
        await asyncio.gather(*s.in_flight.values())
        await asyncio.sleep(0)
        assert not s.in_flight
        await s.once(3 * sweep.FOLLOW_INTERVAL, 4 * sweep.FOLLOW_INTERVAL)
        await asyncio.gather(*s.in_flight.values())
        assert started == ["r", "r"]

    asyncio.run(main())


@pytest.mark.parametrize("waiting", [1, 10, 100, 1000])
def test_runs_without_a_pod_share_a_budget_of_events_lists(waiting: int) -> None:
    """Each resync of a run without a pod lists its Job's Events: however many wait, together at most
    LISTS_PER_SECOND (a few alone keep their own interval); a run whose pod is starting is not slowed down."""
    runs = [run(f"r{i}", "Pending", reason="QuotaExceeded" if i % 2 else "JobCreated") for i in range(waiting)]
    starting = run("starting", "Pending", reason="ContainerCreating")
    window = 600
    lists: collections.Counter[str] = collections.Counter()
    for t in range(1, window + 1):
        for _, name, _ in sweep.due([*runs, starting], t - 1, t):
            lists[name] += 1
    listed = sum(n for name, n in lists.items() if name != "starting")
    assert listed <= sweep.LISTS_PER_SECOND * window + waiting  # each run's phase may add one turn at the edge
    assert all(lists[tr.name] >= 1 for tr in runs)  # none starved
    assert lists["starting"] == window // sweep.RESYNC_INTERVAL
    if waiting == 1:  # alone: its own interval (refusal check 15 s after the Job)
        assert lists["r0"] == window // sweep.RESYNC_INTERVAL


def test_the_budget_moves_no_turn_while_the_number_of_waiting_runs_changes_a_little() -> None:
    """Runs come and go all the time: a turn that moved with each of them could wait far longer than its interval."""
    assert {sweep.budgeted(sweep.RESYNC_INTERVAL, n) for n in range(990, 1020)} == {480.0}
    assert sweep.budgeted(sweep.RESYNC_INTERVAL, 10) == sweep.RESYNC_INTERVAL
    assert sweep.budgeted(sweep.REFUSED_INTERVAL, 1000) / 1000 >= 1 / sweep.LISTS_PER_SECOND
    refused = [run(f"r{i}", "Pending", reason="QuotaExceeded") for i in range(1020)]
    longest: dict[str, int] = {}
    last: dict[str, int] = {}
    for t in range(1, 2001):
        present = refused[: 1000 + (t // 7) % 20]  # 0-19 runs more or less, changing every 7 s
        for _, name, _ in sweep.due(present, t - 1, t):
            if name in last:
                longest[name] = max(longest.get(name, 0), t - last[name])
            last[name] = t
    steady = [longest[f"r{i}"] for i in range(1000)]  # those present throughout
    assert max(steady) <= 480
