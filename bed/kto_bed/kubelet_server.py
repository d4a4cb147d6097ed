"""The slice of the kubelet API the apiserver calls for `kubectl logs`: /containerLogs and /healthz."""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from pathlib import Path

    from .node_agent import NodeAgent
    from .pod_runner import PodRunner


def serve_logs(agent: NodeAgent, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if parts == ["healthz"]:
                self._send(200, b"ok")
                return
            if len(parts) != 4 or parts[0] != "containerLogs":
                self._send(404, b"not found")
                return
            _, ns, pod, container = parts
            query = parse_qs(url.query)
            runner = next((r for r in list(agent.runners.values())
                           if r.ns == ns and r.pod_name == pod), None)
            if runner is None:
                self._send(404, f"pod {ns}/{pod} is not running on this node".encode())
                return
            path = runner.log_path(container)
            data = path.read_bytes() if path.exists() else b""
            if "tailLines" in query:
                n = int(query["tailLines"][0])
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-n:]) if n > 0 else b""
            if "limitBytes" in query:
                data = data[: int(query["limitBytes"][0])]
            follow = query.get("follow", ["false"])[0] == "true"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if not follow:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if follow:
                self._follow(runner, path, container)

        def _follow(self, runner: PodRunner, path: Path, container: str) -> None:
            offset = path.stat().st_size if path.exists() else 0
            while True:
                if path.exists() and path.stat().st_size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    offset += len(chunk)
                    try:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    except OSError:
                        return
                c = next((c for c in runner.main + runner.init if c.name == container), None)
                if c is None or not c.running or runner.deleting.is_set():
                    return
                time.sleep(0.3)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(agent.paths.pki / "ca.crt"))
    ctx.load_cert_chain(str(agent.paths.pki / "apiserver.crt"), str(agent.paths.pki / "apiserver.key"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # only the apiserver's kubelet-client certificate gets in
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
