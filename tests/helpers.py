"""Polling helpers: tests wait for conditions with a deadline, never sleep as an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float = 60.0, desc: str = "condition",
             interval: float = 0.25) -> T:
    """Call fn until it returns something truthy; return it, or fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {desc}; last value: {last!r}")
        time.sleep(interval)
