"""exec, tcpSocket and httpGet probes against 127.0.0.1, with the kubelet's thresholds."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ValueError(f"unknown named port {value!r}")


def run_probe(probe: dict[str, Any], container: dict[str, Any], env: Mapping[str, str], cwd: str) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            done = subprocess.run(probe["exec"]["command"], env=dict(env), cwd=cwd, timeout=timeout,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            return done.returncode == 0
        if "tcpSocket" in probe:
            port = _port(probe["tcpSocket"]["port"], container)
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = _port(get["port"], container)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                conn.request("GET", get.get("path", "/"), headers=headers)
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400
        if "grpc" in probe:
            return False
    except (OSError, subprocess.SubprocessError, ValueError, http.client.HTTPException):
        return False
    return False


@dataclass
class ProbeState:
    """Consecutive successes/failures of one probe on one container run."""

    spec: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    last_run: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None until the threshold decides

    def due(self, now: float) -> bool:
        if now - self.started < float(self.spec.get("initialDelaySeconds", 0)):
            return False
        return now - self.last_run >= float(self.spec.get("periodSeconds", 10))

    def record(self, ok: bool, now: float) -> None:
        self.last_run = now
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.result = False
