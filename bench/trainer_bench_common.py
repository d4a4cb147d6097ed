"""Shared by the trainer benchmarks: the bed's environment and small timing helpers."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_bed_env(path: Path | None = None) -> dict[str, str]:
    """`export KEY=value` lines of `.bed/env` into os.environ (values already set win)."""
    path = path or Path(os.environ.get("KTO_BED_DIR", REPO / ".bed")) / "env"
    loaded: dict[str, str] = {}
    if not path.is_file():
        return loaded
    for line in path.read_text().splitlines():
        if not line.startswith("export ") or "$" in line:
            continue
        key, _, value = line[len("export "):].partition("=")
        parts = shlex.split(value)
        loaded[key] = parts[0] if parts else ""
    for key, value in loaded.items():
        os.environ.setdefault(key, value)
    return loaded


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed: ...` then `elapsed()` gives the seconds the block took."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def cpu_note() -> str:
    return f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
