"""Follow requests from watch events (a run's Job or pod changed), served in the background.

A kopf handler that awaited its follow would keep kopf's whole per-object state (the event, its body and views,
the patch, loggers, the handler's keyword arguments with every index) alive for as long as the follow waits
for a free slot: with many runs and few slots, a copy of that for every waiting event. Here a request is only
(namespace, name, with_progress): the handler records it and returns, and one waiting task per run serves it.

Requests for a run whose task still waits for a slot merge into that task (what it reads is read once it has
the slot, so it sees every event before it). A request after the task has started gets a task of its own:
the follow in progress may have read the views before that event (`reconcile.follow` coalesces the two)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from . import sweep

Follow = Callable[[str, str, bool], Coroutine[Any, Any, None]]  # (namespace, name, with_progress), in a slot


class FollowRequests:
    def __init__(self, slots: asyncio.Semaphore, follow: Follow,
                 lent: Callable[[], contextvars.Context | None]) -> None:
        """`lent`: the context the follows run in (a copy each), lent by a kopf handler (`sweep.Sweep.adopt`)."""
        self.slots, self.follow, self.lent = slots, follow, lent
        # Run -> with_progress of the requests its waiting task serves (a task not yet in a slot).
        self.waiting: dict[tuple[str, str], bool] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def request(self, namespace: str, name: str, with_progress: bool = False) -> None:
        """Follow the run soon; never awaits. The follow runs in a copy of the lent context, not of the caller's:
        kopf posts Events through context variables it sets for its handlers, and a handler's context also holds
        its cause (the event's body, patch, logger). The lent one is a single handler's, kept for the process's
        life; a waiting task must not keep one per event."""
        key = (namespace, name)
        if key in self.waiting:
            self.waiting[key] = self.waiting[key] or with_progress
            return
        self.waiting[key] = with_progress
        lent = self.lent()
        task = asyncio.create_task(self._serve(key), name=f"follow {namespace}/{name}",
                                   context=lent.copy() if lent is not None else contextvars.Context())
        self.tasks.add(task)
        task.add_done_callback(functools.partial(self._done, key))

    async def _serve(self, key: tuple[str, str]) -> None:
        async with self.slots:
            with_progress = self.waiting.pop(key)
            await self.follow(*key, with_progress)

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        sweep.report(task)

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.waiting.clear()
