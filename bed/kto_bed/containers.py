"""One container of a pod run as a local process group: start, watch memory, stop, report state."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .probes import ProbeState
from .quantity import parse_quantity

LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 4096  # the API's limit for a termination message


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory_limit(container: dict[str, Any]) -> int | None:
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(str(value))) if value is not None else None


def tree_memory(pid: int) -> int:
    """Memory a cgroup would charge to the process tree, approximately.

    Summing RSS counts pages shared by forked workers once per process (MLflow's 30-process tree reads
    5.5 GB that way); private pages of each process plus the largest shared set is within a few percent
    of the tree's PSS, at a thousandth of PSS's cost (statm instead of smaps).
    """
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    private, shared = 0, 0
    for p in procs:
        try:
            info = p.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        private += info.rss - info.shared
        shared = max(shared, info.shared)
    return private + shared


def log_tail(path: Path, offset: int) -> str:
    """The last lines a run wrote (from byte `offset` of the log), bounded like a termination message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            start = max(offset, end - 64 * 1024)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    text = "\n".join(lines)
    encoded = text.encode()
    if len(encoded) > LOG_TAIL_BYTES:
        text = encoded[-LOG_TAIL_BYTES:].decode(errors="replace")
    return text


@dataclass
class ContainerRun:
    """Live state of one container, shaped for the API's ContainerStatus."""

    spec: dict[str, Any]
    log_path: Path
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    log_offset: int = 0
    exit_code: int | None = None
    oom: bool = False
    killed_reason: str | None = None
    next_start: float = 0.0
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    startup: ProbeState | None = None
    started_ok: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                         start_new_session=True)
        self.exit_code = None
        self.oom = False
        self.killed_reason = None
        self.state = {"running": {"startedAt": now_iso()}}
        for attr in ("readiness", "liveness", "startup"):
            probe = self.spec.get(f"{attr}Probe")
            setattr(self, attr, ProbeState(probe) if probe else None)
        self.started_ok = self.startup is None

    def fail_to_start(self, reason: str, message: str) -> None:
        self.state = {"waiting": {"reason": reason, "message": message}}

    def poll(self) -> bool:
        """Check exit and memory; return True when the process has just ended."""
        if self.proc is None or self.exit_code is not None:
            return False
        limit = memory_limit(self.spec)
        if limit is not None and self.proc.poll() is None and tree_memory(self.proc.pid) > limit:
            self.oom = True
            self.kill(signal.SIGKILL)
        code = self.proc.poll()
        if code is None:
            return False
        # A signal death reads as 128+signal, as container runtimes report it.
        self.exit_code = 128 - code if code < 0 else code
        if self.oom:
            self.exit_code = 137
        reason = "OOMKilled" if self.oom else (self.killed_reason or ("Completed" if self.exit_code == 0
                                                                       else "Error"))
        term: dict[str, Any] = {
            "exitCode": self.exit_code, "reason": reason,
            "startedAt": self.state.get("running", {}).get("startedAt", now_iso()),
            "finishedAt": now_iso(), "containerID": f"kto-bed://{self.proc.pid}",
        }
        message = log_tail(self.log_path, self.log_offset)
        if message:
            term["message"] = message
        self.state = {"terminated": term}
        return True

    def kill(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return

    def stop(self, grace: float) -> None:
        """SIGTERM, wait the grace period, then SIGKILL the whole process group."""
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.poll()

    def archive_for_restart(self) -> None:
        self.last_state = self.state
        self.restart_count += 1
        self.proc = None
        self.exit_code = None

    def status(self, image: str) -> dict[str, Any]:
        ready = bool(self.running and self.started_ok and
                     (self.readiness.result if self.readiness else True))
        empty = {"waiting": None, "running": None, "terminated": None}
        return {
            "name": self.name, "image": image, "imageID": f"kto-bed://{image}",
            "containerID": f"kto-bed://{self.proc.pid}" if self.proc else None,
            "ready": ready, "started": self.running and self.started_ok,
            "restartCount": self.restart_count,
            "state": {**empty, **self.state},
            "lastState": {**empty, **self.last_state} if self.last_state else {},
        }
