"""KeyedLocks and Coalescer: per-run serialisation and collapsing of follow bursts."""

from __future__ import annotations

import threading
import time

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
    overlap = threading.Event()

    def work(key: str) -> None:
        with locks.hold(key):
            if key in inside:
                overlap.set()
            inside.append(key)
            time.sleep(0.05)
            inside.remove(key)

    threads = [threading.Thread(target=work, args=("x",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap.is_set()
    with locks.hold("x"), locks.hold("y"):  # different keys never block each other
        assert len(locks) == 2
    assert len(locks) == 0


def test_keyed_locks_keep_nothing_once_released() -> None:
    locks = KeyedLocks()
    started = threading.Barrier(9)

    def work(key: str) -> None:
        started.wait()
        with locks.hold(key):
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(f"run-{i % 3}",)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait()
    for t in threads:
        t.join()
    # Every run seen would otherwise leave its lock: the operator would grow with each TrainingRun.
    assert len(locks) == 0
    with locks.hold("run-0"):
        assert len(locks) == 1
