"""Loaded by every Python process started with `PYTHONPATH=bench/memtrace` (bench_operator_memory.py
--tracemalloc does that for the operator only). With KTO_TRACEMALLOC_OUT set: tracemalloc on from the
first import, and SIGUSR1 writes the biggest allocation sites (by file and line, with a short traceback)
to that file. A diagnosis aid: it slows the process and inflates its RSS, so figures come from runs
without it."""

from __future__ import annotations

import os
import signal
import tracemalloc
from types import FrameType

_OUT = os.environ.get("KTO_TRACEMALLOC_OUT")


def _dump(_signum: int, _frame: FrameType | None) -> None:
    if not _OUT:
        return
    snapshot = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])
    lines = [f"traced now {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB"]
    for title, key in (("by line", "lineno"), ("by file", "filename")):
        lines.append(f"-- top 25 {title} --")
        for stat in snapshot.statistics(key)[:25]:
            frame = stat.traceback[0]
            lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:8d} blocks  {frame.filename}:{frame.lineno}")
    lines.append("-- top 10 tracebacks --")
    for stat in snapshot.statistics("traceback")[:10]:
        lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:8d} blocks")
        lines.extend(f"      {line}" for line in stat.traceback.format(limit=8))
    with open(_OUT, "a") as out:
        out.write("\n".join(lines) + "\n\n")


if _OUT:
    tracemalloc.start(8)
    signal.signal(signal.SIGUSR1, _dump)


_CENSUS = os.environ.get("KTO_GC_CENSUS_OUT")


def _census(_signum: int, _frame: FrameType | None) -> None:
    """Objects alive by type (count, shallow bytes): cheap enough for a full-speed process."""
    import collections
    import gc
    import sys

    if not _CENSUS:
        return
    count: collections.Counter[str] = collections.Counter()
    size: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        count[name] += 1
        size[name] += sys.getsizeof(obj)
    lines = [f"-- census: {sum(count.values())} objects, {sum(size.values()) / 1e6:.1f} MB shallow --"]
    # Every type, not a top list: a slow leak is often a small type whose count only grows.
    lines += [f"{size[n] / 1e6:8.2f} MB {count[n]:9d}  {n}" for n, _ in size.most_common()]
    lines += _tasks()
    with open(_CENSUS, "a") as out:
        out.write("\n".join(lines) + "\n\n")


def _tasks() -> list[str]:
    """The event loop's tasks by where they wait: the innermost frames of each one's chain of awaits."""
    import asyncio
    import collections

    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no loop running in this thread
        return []
    where: collections.Counter[str] = collections.Counter()
    for task in tasks:
        chain, coro = [], task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            frame = coro.cr_frame
            chain.append(f"{coro.cr_code.co_qualname}:{frame.f_lineno if frame else '-'}")
            coro = coro.cr_await
        where[" <- ".join(reversed(chain[-4:]))] += 1
    return [f"-- {len(tasks)} tasks, by where they wait --"] + [f"{n:7d}  {w}" for w, n in where.most_common(25)]


if _CENSUS:
    signal.signal(signal.SIGUSR2, _census)
