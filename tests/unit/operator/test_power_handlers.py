"""The power daemon's wait between passes and the power half's index entry of a TrainingRun."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import kopf
from kto_operator.power import handlers, history


class Stopped:
    """kopf's DaemonStopped as the daemon uses it: `await stopped.wait()`."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()

    async def wait(self) -> None:
        await self.flag.wait()


def pause(seconds: float, nudge_after: float | None = None, stop_after: float | None = None) -> float:
    async def main() -> float:
        nudge, stopped = asyncio.Event(), Stopped()
        loop = asyncio.get_running_loop()
        if nudge_after is not None:
            loop.call_later(nudge_after, nudge.set)
        if stop_after is not None:
            loop.call_later(stop_after, stopped.flag.set)
        started = time.monotonic()
        await handlers._pause(nudge, cast(kopf.DaemonStopped, stopped), seconds)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, left  # its waiters are cleaned up
        return time.monotonic() - started

    return asyncio.run(main())


def test_the_daemon_waits_until_the_next_pass() -> None:
    assert 0.25 <= pause(0.3) < 1.0


def test_a_nudge_or_a_stop_ends_the_wait_at_once() -> None:
    assert pause(30, nudge_after=0.05) < 1.0
    assert pause(30, stop_after=0.05) < 1.0
    assert pause(-1) < 0.5  # a pass overdue: no wait


def test_the_index_keeps_what_the_power_rule_reads_of_a_run() -> None:
    run: dict[str, Any] = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u", "creationTimestamp": "2026-12-01T10:00:00Z",
                     "annotations": {"big": "x" * 1000}, "managedFields": [{}]},
        "spec": {"image": "i", "parameters": {"epochs": 3}},
        "status": {"phase": "Succeeded", "completionTime": "2026-12-01T10:05:00Z", "metrics": {"a": 1.0}},
    }
    kept = history.summary(run)
    assert kept == {"metadata": {"name": "r", "creationTimestamp": "2026-12-01T10:00:00Z"},
                    "status": {"phase": "Succeeded", "completionTime": "2026-12-01T10:05:00Z"}}
    assert history.is_active(kept) is False and history.active_runs([kept]) == ()
    deleting = history.summary({**run, "metadata": {**run["metadata"], "deletionTimestamp": "2026-12-01T11:00:00Z"},
                                "status": {}})
    assert not history.is_active(deleting)
    assert history.is_active(history.summary({"metadata": {"name": "new"}}))
