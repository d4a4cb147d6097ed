"""kto_operator.heap: malloc_trim found on glibc, and it does give a burst's freed pages back; the task trims
every interval until the operator's cleanup cancels it."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import time

import kopf
import pytest
from kto_operator import heap

GLIBC = platform.libc_ver()[0] == "glibc"

# A burst's shape: many malloc'd objects (over pymalloc's 512 bytes) freed, a few kept, the last one allocated
# kept so the heap's top stays in use (glibc's own trimming on free returns only the top).
BURST = """
import sys
from kto_operator import heap

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

objects = [bytes(2000) + bytes([i % 256]) for i in range(40_000)]  # about 80 MB
kept = objects[::50] + [objects[-1]]
del objects
before = rss_kb()
heap.trimmer()(0)
print(before, rss_kb())
"""


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_a_bursts_freed_pages_back() -> None:
    assert heap.trimmer() is not None
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, check=True, timeout=60)
    before_kb, after_kb = map(int, out.stdout.split())
    assert before_kb - after_kb > 50_000, (before_kb, after_kb)  # most of the ~80 MB freed goes back


def test_trims_every_interval_until_cancelled() -> None:
    calls: list[int] = []

    async def main() -> None:
        task = asyncio.create_task(heap.trimming(lambda pad: calls.append(pad) or 1, 0.01))
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()

    asyncio.run(main())
    assert calls[:3] == [0, 0, 0]  # pad 0: every free page, not a reserve at the top


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_started_with_the_operator_and_stopped_by_its_cleanup() -> None:
    async def main() -> None:
        memo = kopf.Memo()
        await heap.start_trimming(memo=memo)
        task = memo.heap_trimming
        assert not task.done()
        await heap.stop_trimming(memo=memo)
        assert task.cancelled() and "heap_trimming" not in memo
        await heap.stop_trimming(memo=memo)  # a second cleanup (kopf retries) finds nothing to stop

    asyncio.run(main())


def test_nothing_runs_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "trimmer", lambda: None)  # a C library without it (musl, macOS)

    async def main() -> None:
        memo = kopf.Memo()
        await heap.start_trimming(memo=memo)
        assert "heap_trimming" not in memo
        await heap.stop_trimming(memo=memo)

    asyncio.run(main())
