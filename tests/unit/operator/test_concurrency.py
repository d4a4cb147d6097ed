"""KeyedLocks and Coalescer: per-run serialisation and collapsing of follow bursts."""

from __future__ import annotations

import asyncio

from kto_operator.concurrency import Coalescer, KeyedLocks


def test_coalescer_single_caller() -> None:
    c = Coalescer()
    assert c.enter("a", False) is True
    assert c.again("a") is None
    assert c.enter("a", False) is True  # released


def test_coalescer_collapses_requests_into_one_more_pass() -> None:
    c = Coalescer()
    assert c.enter("a", False) is True
    assert c.enter("a", False) is False
    assert c.enter("a", True) is False  # progress requested by any caller is kept
    assert c.enter("b", False) is True  # other runs are independent
    assert c.again("a") is True
    assert c.again("a") is None
    assert c.enter("a", False) is True


def test_keyed_locks_serialise_one_key_only() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    overlap: list[str] = []

    async def work(key: str) -> None:
        async with locks.hold(key):
            if key in inside:
                overlap.append(key)
            inside.append(key)
            await asyncio.sleep(0.01)
            inside.remove(key)

    async def main() -> None:
        await asyncio.gather(*(work("x") for _ in range(4)))
        assert not overlap
        async with locks.hold("x"), locks.hold("y"):  # different keys never block each other
            assert len(locks) == 2
        assert len(locks) == 0

    asyncio.run(main())


def test_keyed_locks_keep_nothing_once_released() -> None:
    locks = KeyedLocks()

    async def work(key: str) -> None:
        async with locks.hold(key):
            await asyncio.sleep(0.001)

    async def main() -> None:
        await asyncio.gather(*(work(f"run-{i % 3}") for i in range(8)))
        # Every run seen would otherwise leave its lock: the operator would grow with each TrainingRun.
        assert len(locks) == 0

    asyncio.run(main())
