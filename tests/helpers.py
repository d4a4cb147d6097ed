"""Test helpers: polling with a deadline (never a sleep as an assertion), free ports, an HTTP stub server."""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# The test-only trainer image (tests/images/standin-trainer): non-root, mlflow, `python -m kto_bed.standin_trainer`.
STANDIN_IMAGE = "kto-standin-trainer:0.1.0"
# Figures measured by reliability tests (outage lengths, convergence times): printed again in pytest's
# terminal summary, because a passing test's own output is captured and hidden.
FIGURES: list[str] = []


def figure(test: str, text: str) -> None:
    print(text)
    FIGURES.append(f"{test}: {text}")


def wait_for(fn: Callable[[], T | None], timeout: float = 60.0, desc: str = "condition",
             interval: float = 0.25) -> T:
    """Call fn until it returns something truthy; return it, or fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {desc}; last value: {last!r}")
        time.sleep(interval)


def load_module(name: str, path: str) -> Any:
    """A module from a file of the repository that is no package's (an image's program)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sleep_command(seconds: float, exit_code: int = 0) -> list[str]:
    """A container command that sleeps, then exits. As a container's PID 1 a process ignores SIGTERM unless it
    handles it, so this one does, exiting 143 at once like a well-behaved program."""
    code = (f"import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); "
            f"time.sleep({seconds}); sys.exit({exit_code})")
    return ["python", "-c", code]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Stub:
    """What the stub server answers next, and the requests it saw (method, path, headers, body)."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    # The client's port per request: requests on one kept-alive connection share it.
    peers: list[int] = field(default_factory=list)
    port: int = 0


@contextlib.contextmanager
def stub_server(keep_alive: bool = False) -> Iterator[Stub]:
    """A plain HTTP server on loopback standing in for the API server or MLflow in unit tests: it shows what
    the REST clients send and feeds them answers the real servers rarely give. `keep_alive`: HTTP/1.1, whose
    connections stay open for the next request (HTTP/1.0 closes each)."""
    state = Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.seen.append((self.command, self.path, dict(self.headers), body))
            state.peers.append(self.client_address[1])
            self.send_response(state.status)
            for key, value in state.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        do_GET = do_POST = do_PATCH = do_DELETE = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
