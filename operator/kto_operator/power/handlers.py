"""kopf handlers of the power module: thin wrappers around `reconcile.Pass`.

Imported by the operator's main (same process as the TrainingRun handlers); also runs alone:
``kopf run -m kto_operator.power.handlers --namespace NS --standalone``.

- one daemon per PowerSchedule runs reconcile passes; it waits between passes until the next clock
  edge (at most `max_wait`), or until nudged;
- watch events of PowerSchedules (spec or wake/sleep annotations changed) and TrainingRuns (a run
  appeared, ended or went away) nudge the daemon of that namespace, so reactions are immediate;
- deleting a PowerSchedule wakes what it put to sleep (no readiness wait).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import httpx
import kopf

from kto_operator import api, connection, naming
from kto_operator.metrics import shared as shared_metrics
from kto_operator.power import history
from kto_operator.power.context import PowerContext
from kto_operator.power.reconcile import Pass, release_all
from kto_operator.power.settings import PowerSettings
from kto_operator.settings import SettingsError

POWER = (naming.GROUP, naming.VERSION, naming.POWER_PLURAL)
TR = (naming.GROUP, naming.VERSION, naming.PLURAL)
# A failed delete handler is retried after this (kopf's default, 60 s, leaves the platform asleep that long).
DELETE_BACKOFF = 5.0
HALF = "power"  # this half's name among the users of the one API client (connection.shared)
# The handlers' own `logger` is kopf's per-object one, at WARNING unless --verbose (main).
log = logging.getLogger(__name__)


@kopf.on.startup()
async def power_startup(memo: Any, logger: kopf.Logger, **_: Any) -> None:
    try:
        power = PowerSettings.from_env(os.environ)
    except SettingsError as exc:
        raise kopf.PermanentError(f"bad setting: {exc}") from exc  # exits instead of retrying forever
    # The process's one client; made here when this module runs alone, its pool sized for the parallel patches.
    kube = connection.shared(memo, api.Options(pool_size=max(power.parallelism * 2, 4)), HALF)
    memo.power = PowerContext(settings=power, kube=kube, metrics=shared_metrics(memo).power)
    logger.info("power: %s", power)


@kopf.on.cleanup()
async def power_cleanup(memo: Any, **_: Any) -> None:
    if memo.get("power") is not None:  # kopf stops its daemons before the cleanup handlers
        await connection.release(memo, HALF)


def _ctx(memo: Any) -> PowerContext:
    ctx: PowerContext = memo.power
    return ctx


@kopf.on.event(*POWER)
async def power_event(type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    ctx, key = _ctx(memo), (namespace or "", name)
    if type == "DELETED":
        ctx.seen_powers.pop(key, None)
        return
    ann = body.metadata.annotations
    sig = (body.metadata.get("generation"), ann.get(naming.ANNOTATION_WAKE_REQUESTED_AT),
           ann.get(naming.ANNOTATION_SLEEP_REQUESTED_AT))
    if ctx.seen_powers.get(key) != sig:  # our own status writes change nothing here: no self-nudging
        ctx.seen_powers[key] = sig
        if key in ctx.nudges:
            ctx.nudges[key].set()
        else:  # a second PowerSchedule changes which one governs
            ctx.nudge_namespace(namespace)


@kopf.on.event(*TR)
async def trainingrun_event(type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    ctx, uid = _ctx(memo), body.metadata.uid
    active = type != "DELETED" and history.is_active(body)
    if type == "DELETED":
        ctx.seen_runs.pop(uid, None)
    elif ctx.seen_runs.get(uid) == active:
        return  # progress updates of a run: nothing for power
    else:
        ctx.seen_runs[uid] = active
    ctx.nudge_namespace(namespace)


@kopf.index(*TR)
async def power_runs(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str | None, dict[str, Any]]:
    """Every TrainingRun of a namespace, as much of it as the power rule reads (final ones included: the
    last run's end is when the platform became idle)."""
    return {namespace: history.summary(body)}


async def _pause(nudge: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until the next pass is due, a nudge comes or the daemon is stopped, whichever is first."""

    async def stop() -> None:
        await stopped.wait()

    waiters = [asyncio.create_task(nudge.wait()), asyncio.create_task(stop())]
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


@kopf.daemon(*POWER, id="power", cancellation_timeout=10.0)
async def power_daemon(
    stopped: kopf.DaemonStopped, name: str, namespace: str | None, body: kopf.Body, memo: Any,
    logger: kopf.Logger, **kwargs: Any,
) -> None:
    assert namespace, "PowerSchedule is namespaced"
    ctx = _ctx(memo)
    key = (namespace, name)
    nudge = ctx.nudges.setdefault(key, asyncio.Event())
    lock = ctx.pass_lock(key)

    index: kopf.Index[str | None, dict[str, Any]] = kwargs["power_runs"]  # kopf hands indexes by name

    def runs() -> list[dict[str, Any]]:
        return list(index.get(namespace, ()))

    async def one_pass() -> float:
        async with lock:
            return await Pass(ctx.kube, ctx.settings, namespace, name, ctx.clock(), emit, ctx.metrics, runs).run()

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message[:1000])

    try:
        while not stopped:
            nudge.clear()
            started = time.monotonic()
            try:
                wait = await one_pass()
            except (api.ApiError, httpx.HTTPError) as err:
                # The API server hiccupped or an object changed under us: try again shortly.
                logger.warning("power pass failed: %s", err)  # ApiError: one line, no headers
                wait = 2.0
            logger.debug("power pass took %.3f s; next in %.1f s", time.monotonic() - started, wait)
            if not stopped and not nudge.is_set():
                await _pause(nudge, stopped, wait)
    finally:
        ctx.nudges.pop(key, None)


@kopf.on.delete(*POWER, backoff=DELETE_BACKOFF)
async def power_deleted(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """A deleted switch must not leave the platform at zero: wake what it put to sleep."""
    assert namespace, "PowerSchedule is namespaced"
    ctx = _ctx(memo)
    async with ctx.pass_lock((namespace, name)):
        released = await release_all(ctx.kube, namespace, name, ctx.settings)
    ctx.pass_locks.pop((namespace, name), None)
    for line in released:
        log.info("%s/%s deleted: released %s", namespace, name, line)
    ctx.metrics.forget(namespace, name)
