"""memory: glibc's malloc_trim found through ctypes, called every interval until cancelled, skipped without it."""

from __future__ import annotations

import asyncio

import pytest
from kto_operator import memory


def test_glibc_has_malloc_trim() -> None:
    trim = memory.malloc_trim()
    assert trim is not None and trim(0) in (0, 1)  # 1: memory was released


def test_trims_every_interval_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: lambda pad: calls.append(pad) or 0)

    async def scenario() -> None:
        task = asyncio.create_task(memory.trim_every(0.01))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert set(calls) == {0}


def test_without_malloc_trim_there_is_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "malloc_trim", lambda: None)
    asyncio.run(asyncio.wait_for(memory.trim_every(0.01), 10))  # returns at once
