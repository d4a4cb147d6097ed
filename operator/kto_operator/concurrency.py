"""Per-TrainingRun serialisation for the handler threads (kopf runs sync handlers in a thread pool, and a
pod event, a timer tick and a create handler of the same run may arrive together)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class KeyedLocks:
    """One lock per TrainingRun, so that a pod event, a timer tick and a handler never interleave."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def forget(self, key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)


class Coalescer:
    """Collapses bursts of follow requests for one TrainingRun (a pod start alone is 4-5 watch events):
    while one thread follows a run, further requests only ask it for one more pass."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._pending: dict[str, bool] = {}  # key -> with_progress of the requested extra pass

    def enter(self, key: str, with_progress: bool) -> bool:
        """True: the caller runs the passes. False: a running caller will do one more pass."""
        with self._guard:
            if key in self._running:
                self._pending[key] = self._pending.get(key, False) or with_progress
                return False
            self._running.add(key)
            return True

    def again(self, key: str) -> bool | None:
        """with_progress of one more requested pass, or None (and the caller is done)."""
        with self._guard:
            if key in self._pending:
                return self._pending.pop(key)
            self._running.discard(key)
            return None
