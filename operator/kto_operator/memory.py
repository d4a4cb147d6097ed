"""Freed heap back to the OS. After a burst of runs, glibc keeps what the operator freed on its own free lists, and
the process would stay at its peak RSS for good (the figure a namespace's memory quota counts); malloc_trim(0)
returns those pages. Python has no binding for it: ctypes, and nothing on a libc without it (musl)."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

# Seconds between trims; a trim takes well under a millisecond.
TRIM_INTERVAL = 15.0


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, None where the C library has none."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


async def trim_every(interval: float = TRIM_INTERVAL) -> None:
    """Until cancelled: return the freed heap every `interval` seconds."""
    trim = malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval)
        trim(0)
