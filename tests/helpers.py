"""Polling helpers: tests wait for conditions with a deadline, never sleep as an assertion."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
# Figures measured by reliability tests (outage lengths, convergence times): printed again in pytest's
# terminal summary, because a passing test's own output is captured and hidden.
FIGURES: list[str] = []


def figure(test: str, text: str) -> None:
    print(text)
    FIGURES.append(f"{test}: {text}")


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


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
