"""One reconcile pass of a PowerSchedule: decide, then move the platform one step towards it.

States: On -> GoingToSleep -> Off -> WakingUp -> On. Each pass makes at most one state transition and
returns how long to wait before the next pass, so the caller (a kopf daemon) never blocks. Every step is
idempotent: the truth about a slept workload is on the workload (kto.dev/ annotations), so a pass after
an operator restart continues where the last one stopped.

GoingToSleep is announced in status *before* the runs are listed again and the workloads are scaled:
a TrainingRun handler that asks `gate.platform_ready` after that sees "not ready", and a run created
before it is seen by the next pass, which then defers the sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from kto_operator import api, naming, times
from kto_operator.api import Api, Conflict
from kto_operator.power import history, schedule, workloads
from kto_operator.power.metrics import PowerMetrics
from kto_operator.power.schedule import GOING_TO_SLEEP, OFF, ON, WAKING_UP, Decision, SpecError
from kto_operator.power.settings import PowerSettings
from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, KINDS, STATEFULSET

log = logging.getLogger(__name__)
P = TypeVar("P")
CONFLICT_RETRIES = 5

DUPLICATE = "Duplicate"
INVALID_SCHEDULE = "InvalidSchedule"
INVALID_SPEC = "InvalidSpec"
SLEEP_ORDER = (DEPLOYMENT, CRONJOB, STATEFULSET)  # apps first, databases last
WAKE_ORDER = (STATEFULSET, DEPLOYMENT, CRONJOB)  # databases first, each group Ready before the next
WORKLOADS = {DEPLOYMENT: api.DEPLOYMENTS, STATEFULSET: api.STATEFULSETS, CRONJOB: api.CRONJOBS}

Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


def governing(powers: Sequence[Mapping[str, Any]]) -> str | None:
    """The one PowerSchedule of a namespace that acts: the oldest (then by name); the others report Duplicate."""
    live = [p for p in powers if not p["metadata"].get("deletionTimestamp")]
    if not live:
        return None
    oldest = min(live, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return str(oldest["metadata"]["name"])


class Pass:
    """One pass over one PowerSchedule (state kept only for the duration of the pass)."""

    def __init__(self, kube: Api, settings: PowerSettings, ns: str, name: str, now: datetime, emit: Emit,
                 metrics: PowerMetrics, runs: Callable[[], Iterable[Mapping[str, Any]]]):
        """`runs`: the namespace's TrainingRuns as watched (history.summary of each)."""
        self.kube, self.settings, self.ns, self.name, self.now, self.emit = kube, settings, ns, name, now, emit
        self.metrics, self.runs = metrics, runs
        self.status: dict[str, Any] = {}
        self.new: dict[str, Any] = {}
        self.warn_reason: str | None = None  # a Warning Event goes with a new message of this reason

    # ---------------------------------------------------------------------------------------------
    async def run(self) -> float:
        # The namespace's PowerSchedules read fresh (this one's status is the state machine's); its runs as
        # watched: before the workloads go to sleep, `step` looks at them once more, fresh.
        powers, runs = await self.kube.list(api.POWERS, self.ns), list(self.runs())
        power = next((p for p in powers if p["metadata"]["name"] == self.name), None)
        if power is None or power["metadata"].get("deletionTimestamp"):
            return self.settings.max_wait
        self.status = dict(power.get("status") or {})
        if governing(powers) != self.name:
            self.write(state=None, reason=DUPLICATE,
                       message="another PowerSchedule in this namespace is older and governs it")
            self.warn_reason = DUPLICATE
            await self.flush()
            return self.settings.max_wait
        try:
            spec = schedule.PowerSpec.from_dict(power.get("spec") or {})
        except SpecError as err:
            self.write(reason=INVALID_SPEC, message=str(err))
            self.warn_reason = INVALID_SPEC
            await self.flush()
            return self.settings.max_wait
        hist, manual, activity = history.build_history(power, runs, self.now)
        decision = schedule.decide(spec, hist, self.now)
        problems = manual.problems + decision.problems
        self.warn_reason = INVALID_SCHEDULE if problems else None
        self.write(
            reason=INVALID_SCHEDULE if problems else decision.reason,
            message="; ".join((*problems, decision.message)),
            nextOn=times.format_time(decision.next_on),
            nextOff=times.format_time(decision.next_off),
            deferredBy=list(decision.deferred_by),
            activeRuns=list(hist.active_runs),
            lastRunActivity=times.format_time(activity),
            manual=manual.status_manual,
            observedGeneration=power["metadata"].get("generation"),
        )
        if decision.deferred_by and not self.status.get("deferredBy") and decision.reason == schedule.SLEEP_DEFERRED:
            self.emit("Normal", schedule.SLEEP_DEFERRED, decision.message)
        wait = await self.step(spec, decision, power)
        await self.flush()
        self.metrics.observe(self.ns, self.name, self.merged())
        return wait

    async def step(self, spec: schedule.PowerSpec, d: Decision, power: Mapping[str, Any]) -> float:
        current = self.status.get("state")
        if d.desired == OFF:
            if current == OFF:
                return self.idle_wait(d)
            if current != GOING_TO_SLEEP:
                self.transition(GOING_TO_SLEEP, d.message)
                await self.flush()  # announced (persisted) before the last look for runs
                if history.active_runs(await self.kube.list(api.RUNS, self.ns)):
                    return 0.0  # a run came in: the next pass defers the sleep
            sel = workloads.Selection.from_spec(power.get("spec") or {}, self.settings.operator_deployment)
            started = time.monotonic()
            if not await self.sleep_all(sel):
                return self.settings.poll
            log.info("%s/%s: %d workloads asleep, sweep %.2f s", self.ns, self.name,
                     len(self.new.get("workloads") or ()), time.monotonic() - started)
            self.transition(OFF, d.message, "Asleep")
            return self.idle_wait(d)
        if current == ON:
            return self.idle_wait(d)
        if current != WAKING_UP:
            self.transition(WAKING_UP, d.message)
            self.write(wakeStartedAt=times.format_time(self.now))
            await self.flush()
        if not await self.wake_step():
            return self.settings.poll
        self.transition(ON, d.message, "Awake")
        self.write(workloads=[], wakeStartedAt=None)
        return self.idle_wait(d)

    # ---------------------------------------------------------------------------------------------
    async def sleep_all(self, sel: workloads.Selection) -> bool:
        """Scale/suspend every managed workload; False when one kept changing under us (retry next pass)."""
        now_iso = times.format_time(self.now)
        by_kind: dict[str, list[dict[str, Any]]] = {}
        ok = True
        listed = dict(zip(SLEEP_ORDER, await asyncio.gather(*(self.kube.list(WORKLOADS[k], self.ns)
                                                              for k in SLEEP_ORDER)), strict=True))
        for kind in SLEEP_ORDER:
            objs = listed[kind]

            def plan(o: Mapping[str, Any], kind: str = kind) -> dict[str, Any] | None:
                return workloads.sleep_patch(kind, o, self.name, now_iso)

            results = await self.apply(kind, workloads.managed(kind, objs, sel), plan, lambda p: p)
            patched = {r["metadata"]["name"]: r for _, r in results if isinstance(r, dict)}
            ok = ok and not any(isinstance(r, Conflict) for _, r in results)
            by_kind[kind] = [patched.get(o["metadata"]["name"], o) for o in objs]
        self.write(workloads=workloads.status_workloads(by_kind))
        return ok

    async def wake_step(self) -> bool:
        """Restore one group at a time (StatefulSets, Deployments, CronJobs); True once all are Ready."""
        waiting_for = {(w["kind"], w["name"]) for w in self.status.get("workloads") or []}
        started = times.parse_time(self.status.get("wakeStartedAt")) or self.now
        timed_out = self.now - started > timedelta(seconds=self.settings.ready_timeout)
        for kind in WAKE_ORDER:
            objs = await self.kube.list(WORKLOADS[kind], self.ns)

            def plan(o: Mapping[str, Any], kind: str = kind) -> workloads.WakeAction | None:
                return workloads.wake_action(kind, o)

            started = time.monotonic()
            results = await self.apply(kind, objs, plan, lambda a: a.patch)
            if results:
                log.info("%s/%s: %d %ss restored in %.2f s", self.ns, self.name, len(results), kind,
                         time.monotonic() - started)
            for action, r in results:
                if not action.restored and isinstance(r, dict):
                    self.emit("Normal", "HumanEditKept", action.detail)
            if results:
                return False  # look at the restored group again on the next pass
            not_ready = sorted(o["metadata"]["name"] for o in objs
                               if (kind, o["metadata"]["name"]) in waiting_for and not workloads.ready(kind, o))
            if not_ready and not timed_out:
                self.write(message=f"waking up: waiting for {kind}s to be Ready: {', '.join(not_ready[:10])}")
                return False
            if not_ready and not self.status.get("wakeTimedOut"):
                self.emit("Warning", "WakeTimeout",
                          f"{kind}s not Ready after {self.settings.ready_timeout:.0f} s: {', '.join(not_ready)}")
                self.write(wakeTimedOut=True)
        self.write(wakeTimedOut=None)
        return True

    async def apply(
        self, kind: str, objs: Sequence[Mapping[str, Any]], plan: Callable[[Mapping[str, Any]], P | None],
        patch_of: Callable[[P], dict[str, Any]],
    ) -> list[tuple[P, dict[str, Any] | Conflict | None]]:
        """Patch each object that `plan` wants changed, concurrently. A 409 (any write, status included,
        since the read) re-reads that object and plans again: the patch never saves a stale value."""

        slots = asyncio.Semaphore(self.settings.parallelism)

        async def one(obj: Mapping[str, Any]) -> tuple[P, dict[str, Any] | Conflict | None] | None:
            async with slots:
                return await patch_planned(self.kube, kind, self.ns, obj, plan, patch_of)

        done = await asyncio.gather(*(one(o) for o in objs if plan(o) is not None))
        return [d for d in done if d is not None]

    # ---------------------------------------------------------------------------------------------
    def transition(self, state: str, message: str, event_reason: str | None = None) -> None:
        self.write(state=state, lastTransition=times.format_time(self.now))
        self.emit("Normal", event_reason or state, f"{state}: {message}")
        self.metrics.transition(self.ns, self.name, state)

    def idle_wait(self, d: Decision) -> float:
        if d.recheck_at is None:
            return self.settings.max_wait
        return max(0.0, min(self.settings.max_wait, (d.recheck_at - self.now).total_seconds()))

    def write(self, **fields: Any) -> None:
        self.new.update(fields)

    def merged(self) -> dict[str, Any]:
        return {**self.status, **{k: v for k, v in self.new.items() if v is not None}}

    async def flush(self) -> None:
        """Patch status with what changed (nothing when nothing did: no event storm from our own writes)."""
        changes = {k: v for k, v in self.new.items() if self.status.get(k) != v}
        if not changes:
            return
        warn = self.warn_reason
        if warn and "message" in changes and self.status.get("reason") != warn:
            self.emit("Warning", warn, str(self.new.get("message")))
        await self.kube.patch(api.POWERS, self.ns, self.name, {"status": changes}, status=True)
        self.status.update(changes)
        self.new = {}


async def patch_planned(
    kube: Api, kind: str, ns: str, obj: Mapping[str, Any], plan: Callable[[Mapping[str, Any]], P | None],
    patch_of: Callable[[P], dict[str, Any]],
) -> tuple[P, dict[str, Any] | Conflict | None] | None:
    """Patch one object as `plan` wants (None: nothing to do). The patches carry the resourceVersion they
    were planned from, so a 409 (any write since the read, a controller's status update included) re-reads
    the object and plans again. The Conflict itself is returned after CONFLICT_RETRIES; None if it is gone."""
    name = obj["metadata"]["name"]
    planned = plan(obj)
    attempts = 0
    while planned is not None:
        attempts += 1
        try:
            return planned, await kube.patch(WORKLOADS[kind], ns, name, patch_of(planned))
        except Conflict as err:
            fresh = await kube.get(WORKLOADS[kind], ns, name)
            if attempts >= CONFLICT_RETRIES or fresh is None:
                return (planned, err) if fresh is not None else None
            planned = plan(fresh)
    return None


async def release_all(kube: Api, ns: str, owner: str, settings: PowerSettings) -> list[str]:
    """Wake (without waiting) every workload `owner` put to sleep: used when the PowerSchedule is deleted."""

    def plan(obj: Mapping[str, Any]) -> workloads.WakeAction | None:
        ann = obj["metadata"].get("annotations") or {}
        return workloads.wake_action(kind, obj) if ann.get(naming.ANNOTATION_SLEPT_BY) in (owner, None) else None

    done = []
    for kind in KINDS:
        for obj in await kube.list(WORKLOADS[kind], ns):
            result = await patch_planned(kube, kind, ns, obj, plan, lambda action: action.patch)
            if result is None:
                continue
            action, outcome = result
            if isinstance(outcome, Conflict):
                log.warning("%s/%s kept changing during release; left annotated", kind, obj["metadata"]["name"])
            elif outcome is not None:
                done.append(action.detail)
    return done
