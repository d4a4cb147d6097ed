"""One periodic pass over the live TrainingRuns: the follows no watch event brings.

Job and pod events drive a run's updates; the sweep adds what events cannot bring: the MLflow progress of a
Running run every FOLLOW_INTERVAL, and a resync of a run that has a Job but no running trainer (a missed
event, the image-pull fail-fast deadline, a pod refused) every RESYNC_INTERVAL (REFUSED_INTERVAL once its pod
was refused; longer when many runs wait without a pod: LISTS_PER_SECOND).
Each run keeps its own phase within the interval (from its UID), so that many runs spread their follows
evenly. One task serves every run: no per-run state (a kopf timer would hold a task, a stopper and a copy of
the body per run).

With peering (several replicas), the sweep acts only where kopf lets the handlers act: kopf pauses a replica
while a live peer has a higher priority, and the sweep reads the same peering object by the same rule.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import functools
import logging
import math
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import kopf

from . import api, times
from .refusals import REASONS as REFUSALS
from .status import NO_POD, RUNNING, TERMINAL_PHASES
from .views import RunEntry

logger = logging.getLogger(__name__)

# How often the sweep looks for due runs: the precision of the intervals below.
TICK = 1.0
# Progress (MLflow metrics) and resync period of a Running run.
FOLLOW_INTERVAL = 5.0
# Resync period of a run whose Job exists but whose trainer is not running yet. Slower than FOLLOW_INTERVAL
# because such runs pile up in a burst, and their requests must not starve the Job creations of the burst.
RESYNC_INTERVAL = 15.0
# Resync period of a run whose pod the API server refused (a quota, Pod Security): the Job controller retries
# by itself and the pod's events bring its start; a resync only refreshes the refusal's text (an Events list).
REFUSED_INTERVAL = 60.0
# Resyncs that list Events (a run whose Job has no pod: refusals.observe looks for why) share a budget: with many
# such runs each one's interval doubles until together they cost the API server at most this many lists a second
# on average (a quota that refuses 1,000 runs: each one looked at every 8 minutes, not 17 lists a second for ever).
LISTS_PER_SECOND = 4.0
# How long the peering answer is trusted: kopf itself reacts to a peer's keep-alive within seconds.
PEERING_RECHECK = 5.0

Follow = Callable[[str, str, bool], Coroutine[Any, Any, None]]  # (namespace, name, with_progress)


def running(run: RunEntry) -> bool:
    return run.phase == RUNNING


def waiting(run: RunEntry) -> bool:
    """A Job exists (or a cancel waits for MLflow) and the trainer does not run: Pending, or ended and waiting
    for MLflow to record it. Other runs without a Job are the start handler's (kopf retries it)."""
    return bool(run.job_name or run.cancel) and run.phase not in TERMINAL_PHASES | {RUNNING}


def offset(uid: str, interval: float) -> float:
    """The run's own phase within `interval`: stable across sweeps and restarts, spread over the runs."""
    return (zlib.crc32(uid.encode()) % 1000) / 1000 * interval


def crossed(uid: str, interval: float, previous: float, now: float) -> bool:
    """True when the run's next time (every `interval`, at its own offset) falls in (previous, now]."""
    shift = offset(uid, interval)
    return math.floor((now - shift) / interval) > math.floor((previous - shift) / interval)


def listing(run: RunEntry) -> bool:
    """A resync of this waiting run lists its Job's Events: no pod yet, or its pod refused."""
    return run.reason in REFUSALS or run.reason == NO_POD


def budgeted(interval: float, listers: int) -> float:
    """`interval`, doubled until `listers` runs resynced that often list within LISTS_PER_SECOND. Whole doublings:
    every run's turn moves only when their number crosses a power of two, not with each run that comes or goes."""
    while listers / interval > LISTS_PER_SECOND:
        interval *= 2
    return interval


def due(runs: Iterable[RunEntry], previous: float, now: float) -> list[tuple[str, str, bool]]:
    """(namespace, name, with_progress) of the runs to follow at `now`, the previous sweep being at `previous`."""
    live = list(runs)
    listers = sum(1 for run in live if waiting(run) and listing(run))
    found = []
    for run in live:
        if running(run):
            if crossed(run.uid, FOLLOW_INTERVAL, previous, now):
                found.append((run.namespace, run.name, True))
        elif waiting(run):
            interval = REFUSED_INTERVAL if run.reason in REFUSALS else RESYNC_INTERVAL
            if listing(run):
                interval = budgeted(interval, listers)
            if crossed(run.uid, interval, previous, now):
                found.append((run.namespace, run.name, False))
    return found


def report(task: asyncio.Task[None]) -> None:
    """Log how a background follow ended (the sweep's or an event's): either way the run's next turn or its next
    event tries again."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, (*api.CALL_ERRORS, kopf.TemporaryError)):
        logger.warning("%s: %s", task.get_name(), exc)
    elif exc is not None:
        logger.error("%s failed: %s", task.get_name(), exc, exc_info=exc)


def outranked(peers: Mapping[str, Any], priority: int, now: datetime.datetime) -> bool:
    """kopf's pause rule: a live peer (last seen within its lifetime) of a higher priority than ours."""
    for peer in peers.values():
        if not isinstance(peer, Mapping):
            continue
        seen = times.parse_time(str(peer.get("lastseen") or ""))
        try:
            alive = seen is not None and seen + datetime.timedelta(seconds=int(peer.get("lifetime", 60))) > now
            if alive and int(peer.get("priority", 0)) > priority:
                return True
        except (TypeError, ValueError):
            continue  # a peer entry that is not kopf's: ignored, as kopf ignores it
    return False


@dataclasses.dataclass(frozen=True)
class Peering:
    """The KopfPeering (namespaced operator) or ClusterKopfPeering (all namespaces) this replica belongs to."""

    name: str
    namespace: str | None
    priority: int

    async def acting(self, kube: api.Api, now: datetime.datetime) -> bool:
        kind = api.PEERINGS if self.namespace else api.CLUSTER_PEERINGS
        body = await kube.get(kind, self.namespace, self.name)
        return not outranked((body or {}).get("status") or {}, self.priority, now)


class Sweep:
    """The task that follows due runs, read from kopf's index of live TrainingRuns."""

    def __init__(self, runs: Mapping[Any, Iterable[RunEntry]], follow: Follow, kube: api.Api,
                 peering: Peering | None = None, loop_time: Callable[[], float] | None = None) -> None:
        self.runs, self.follow, self.kube, self.peering = runs, follow, kube, peering
        self.loop_time = loop_time or asyncio.get_running_loop().time
        # One follow per run at a time: a run still being followed (slow MLflow, no free slot) is not due again.
        self.in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._acting: tuple[float, bool] = (-math.inf, False)  # (checked at, answer)
        # kopf posts Events (kopf.event) through context variables it sets for its handlers only: the follows
        # run in a copy of a handler's context, lent by the first handler call (`adopt`).
        self.context: contextvars.Context | None = None

    def adopt(self) -> None:
        """Called from a kopf handler: its context (kopf's Event queue) becomes the follows' context."""
        if self.context is None:
            self.context = contextvars.copy_context()

    async def run(self) -> None:
        previous = self.loop_time()
        while True:
            await asyncio.sleep(TICK)
            now = self.loop_time()
            try:
                await self.once(previous, now)
            except (KeyError, TypeError, ValueError) as exc:  # a bad value in one run's entry: one pass lost
                logger.error("sweep pass failed, next one in %.0f s: %s", TICK, exc, exc_info=exc)
            previous = now

    async def once(self, previous: float, now: float) -> None:
        """Start the follows due in (previous, now]; they run in the background."""
        found = due((tr for entries in list(self.runs.values()) for tr in entries), previous, now)
        if found and self.context is not None and await self._may_act(now):
            for namespace, name, with_progress in found:
                if (namespace, name) not in self.in_flight:
                    self._spawn(namespace, name, with_progress)

    async def _may_act(self, now: float) -> bool:
        if self.peering is None:
            return True
        checked, answer = self._acting
        if now - checked >= PEERING_RECHECK:
            try:
                answer = await self.peering.acting(self.kube, times.now())
            except api.CALL_ERRORS as exc:
                logger.warning("peering %s unreadable, not sweeping: %s", self.peering.name, exc)
                answer = False
            self._acting = (now, answer)
        return answer

    def _spawn(self, namespace: str, name: str, with_progress: bool) -> None:
        assert self.context is not None
        task = asyncio.create_task(self.follow(namespace, name, with_progress), name=f"sweep {namespace}/{name}",
                                   context=self.context.copy())
        self.in_flight[(namespace, name)] = task
        task.add_done_callback(functools.partial(self._done, (namespace, name)))

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self.in_flight.get(key) is task:
            del self.in_flight[key]
        report(task)

    async def stop(self) -> None:
        tasks = list(self.in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
