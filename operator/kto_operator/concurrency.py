"""Per-TrainingRun serialisation of the async handlers (a pod event, the sweep and a create handler of the
same run may arrive together, and each awaits the API server and MLflow in between)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    """One lock per TrainingRun, so that a pod event, the sweep and a handler never interleave.

    An entry lives only while someone holds or waits for its lock: a run's last event (a follow after
    its deletion) must not leave a lock behind, or a long-lived operator grows with every run it saw.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # key -> (lock, [holders + waiters])

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        # One event loop: nothing runs between these lines and the lock's acquisition but other coroutines'
        # awaits, so the bookkeeping needs no guard of its own.
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class Coalescer:
    """Collapses bursts of follow requests for one TrainingRun (a pod start alone is 4-5 watch events):
    while one handler follows a run, further requests only ask it for one more pass. One event loop: `enter`
    and `again` never await, so their bookkeeping needs no guard."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._pending: dict[str, bool] = {}  # key -> with_progress of the requested extra pass

    def enter(self, key: str, with_progress: bool) -> bool:
        """True: the caller runs the passes. False: a running caller will do one more pass."""
        if key in self._running:
            self._pending[key] = self._pending.get(key, False) or with_progress
            return False
        self._running.add(key)
        return True

    def again(self, key: str) -> bool | None:
        """with_progress of one more requested pass, or None (and the caller is done)."""
        if key in self._pending:
            return self._pending.pop(key)
        self._running.discard(key)
        return None
