"""Background processes of the bed: started detached, tracked by pid file and by an env marker.

Every process the bed starts — daemons and pod containers alike — carries ``KTO_BED=<state dir>`` in
its environment, so ``down`` can find and stop all of them even after a crash lost a pid file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from .paths import BedPaths

MARKER = "KTO_BED"


def marked_env(paths: BedPaths, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env[MARKER] = str(paths.root)
    return env


def start(paths: BedPaths, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start a daemon in its own session, stdout+stderr to .bed/logs/<name>.log; return its pid."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    log = open(paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=marked_env(paths, env), cwd=cwd, start_new_session=True,
    )
    log.close()
    (paths.pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def pid_of(paths: BedPaths, name: str) -> int | None:
    f = paths.pids / f"{name}.pid"
    if not f.exists():
        return None
    pid = int(f.read_text().strip())
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if proc.environ().get(MARKER) != str(paths.root):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid


def is_running(paths: BedPaths, name: str) -> bool:
    return pid_of(paths, name) is not None


def stop(paths: BedPaths, name: str, grace: float = 10.0) -> None:
    pid = pid_of(paths, name)
    if pid is not None:
        _terminate([psutil.Process(pid)], grace)
    (paths.pids / f"{name}.pid").unlink(missing_ok=True)


def marked_processes(paths: BedPaths) -> list[psutil.Process]:
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER) == str(paths.root):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _terminate(procs: list[psutil.Process], grace: float) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM) if os.getpgid(p.pid) == p.pid else p.terminate()
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)


def stop_everything(paths: BedPaths, order: Sequence[str], grace: float = 10.0) -> int:
    """Stop named daemons in order, then anything still carrying the marker; return leftovers."""
    for name in order:
        stop(paths, name, grace)
    rest = marked_processes(paths)
    if rest:
        _terminate(rest, grace=3.0)
    deadline = time.monotonic() + 10
    while marked_processes(paths) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(marked_processes(paths))
