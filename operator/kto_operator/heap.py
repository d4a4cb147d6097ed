"""The process gives the C heap's free pages back to the system.

glibc returns freed memory to the system only from the top of its heap: after a burst of runs, the pages the
burst's objects held stay mapped, and the RSS stays at the burst's peak until a restart. Every TRIM_INTERVAL,
`malloc_trim(0)` hands every whole free page back: a walk of the allocator's free lists, cheap next to the
interval. Where the C library has no malloc_trim (musl, macOS) nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from typing import Any

import kopf

TRIM_INTERVAL = 10.0

Trim = Callable[[int], int]


def trimmer() -> Trim | None:
    """The C library's malloc_trim, or None where it has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int  # int malloc_trim(size_t pad)
    return trim


async def trimming(trim: Trim, interval: float) -> None:
    """Trim every `interval` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        trim(0)


@kopf.on.startup()
async def start_trimming(memo: Any, **_: Any) -> None:
    trim = trimmer()
    if trim is not None:
        memo.heap_trimming = asyncio.create_task(trimming(trim, TRIM_INTERVAL), name="heap trim")


@kopf.on.cleanup()
async def stop_trimming(memo: Any, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.pop("heap_trimming", None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
