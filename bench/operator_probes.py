"""Counting what the operator asks of its two servers, from outside the operator.

- `OperatorIdentity`: the operator runs as the shipped ServiceAccount (manifests/operator: its Role only)
  with a token, and a FlowSchema of its own puts that identity's requests in their own flow: the API
  server's `apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` is then its count of the
  operator's requests alone (the bench's own requests and the controllers' go to other flows).
- `MlflowCounter`: a forwarding HTTP proxy between the operator and the bed's MLflow that records when
  each request arrived (the operator's MLflow traffic, per run, before its Job and in all).
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
OPERATOR_MANIFESTS = ("serviceaccount.yaml", "role.yaml", "rolebinding.yaml")
SERVICE_ACCOUNT = "kto-operator"
# Matched before the built-in `service-accounts` schema (precedence 9000); the priority level is a
# built-in one, so the operator's requests are queued as any service account's would be.
PRECEDENCE, PRIORITY_LEVEL = 1000, "workload-low"
IDLE_REOPEN_S = 2.0
DISPATCHED = re.compile(r'^apiserver_flowcontrol_dispatched_requests_total\{(.*)\} ([0-9.e+]+)$')


def dispatched(metrics_text: str, flow_schema: str) -> int:
    """Requests the API server dispatched in one flow schema, from its /metrics text."""
    total = 0.0
    for line in metrics_text.splitlines():
        m = DISPATCHED.match(line)
        if m and f'flow_schema="{flow_schema}"' in m.group(1):
            total += float(m.group(2))
    return int(total)


def flow_schema(name: str, namespace: str, service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": {"name": name, "labels": {"kto.dev/bench": "true"}},
        "spec": {
            "priorityLevelConfiguration": {"name": PRIORITY_LEVEL}, "matchingPrecedence": PRECEDENCE,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                              "serviceAccount": {"name": service_account, "namespace": namespace}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True,
                                   "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    }


def token_kubeconfig(admin_kubeconfig: Path, token: str) -> dict[str, Any]:
    """A kubeconfig for the same API server (its address and CA) logging in with `token`."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    current = admin["current-context"]
    context = next(c["context"] for c in admin["contexts"] if c["name"] == current)
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    return {"apiVersion": "v1", "kind": "Config", "current-context": "operator",
            "clusters": [cluster], "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}]}


class OperatorIdentity:
    """The shipped ServiceAccount, Role and RoleBinding in `namespace`, a token kubeconfig for it, and its
    own FlowSchema. `requests()` is the API server's count of that identity's requests so far."""

    def __init__(self, bed: Any, namespace: str, out: Path) -> None:
        self.bed, self.namespace = bed, namespace
        self.schema = f"kto-bench-{namespace}-{uuid.uuid4().hex[:4]}"
        self.kubeconfig = out / "operator.kubeconfig"

    def create(self) -> OperatorIdentity:
        files = [arg for name in OPERATOR_MANIFESTS for arg in ("-f", str(REPO / "manifests" / "operator" / name))]
        self.bed.kubectl("apply", "-n", self.namespace, *files)
        token = self.bed.kubectl("create", "token", SERVICE_ACCOUNT, "-n", self.namespace, "--duration=4h").stdout
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(yaml.safe_dump(token_kubeconfig(self.bed.kubeconfig, token.strip())))
        self.bed.kubectl("apply", "-f", "-",
                         input=yaml.safe_dump(flow_schema(self.schema, self.namespace, SERVICE_ACCOUNT)))
        self._wait_counted()
        return self

    def _wait_counted(self, timeout: float = 60) -> None:
        """The API server applies a new FlowSchema asynchronously: a request as the operator's identity
        must show up in its flow before any figure is read from it."""
        deadline = time.monotonic() + timeout
        while True:
            before = self.requests()
            self.bed.kubectl("--kubeconfig", str(self.kubeconfig), "get", "trainingruns", "-n", self.namespace)
            if self.requests() > before:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"FlowSchema {self.schema} counts no request after {timeout:.0f} s")
            time.sleep(0.5)

    def requests(self) -> int:
        return dispatched(self.bed.kubectl("get", "--raw", "/metrics", timeout=60).stdout, self.schema)

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def delete(self) -> None:
        self.bed.kubectl("delete", "flowschema", self.schema, "--ignore-not-found", check=False)


class MlflowCounter:
    """A forwarding proxy on loopback: `uri` goes to the operator, every request it forwards is recorded as
    (arrival time.monotonic(), method, path). Keep-alive both ways, like the operator's urllib3 pool."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"MlflowCounter forwards plain http only, not {upstream}")
        self.upstream = (target.hostname, target.port or 80)
        self.seen: list[tuple[float, str, str]] = []
        self.overhead_s: list[float] = []  # time in the proxy beyond the upstream's answer, per request
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.uri = ""

    def start(self) -> MlflowCounter:
        counter, local = self, threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                asked = time.monotonic()
                response, data = counter.exchange(local, self.command, self.path, body, headers)
                answered = time.monotonic()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with counter.lock:
                    counter.seen.append((arrived, self.command, self.path.split("?")[0]))
                    counter.overhead_s.append(time.monotonic() - arrived - (answered - asked))

            do_GET = do_POST = do_PATCH = do_DELETE = forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def exchange(self, local: threading.local, method: str, path: str, body: bytes,
                 headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """One request upstream on this thread's kept-alive connection. MLflow's server closes a connection
        idle for 5 s: one idle for longer than IDLE_REOPEN_S is replaced first, and a request that finds
        its reused connection closed is sent once more on a new one (it never reached the server)."""
        conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
        reused = conn is not None and time.monotonic() - getattr(local, "used", 0.0) < IDLE_REOPEN_S
        if conn is not None and not reused:
            conn.close()
        for attempt in (1, 2):
            if not reused or attempt == 2:
                conn = local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            assert conn is not None
            try:
                conn.request(method, path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused or attempt == 2:
                    raise
                continue
            local.used = time.monotonic()
            return response, data
        raise AssertionError("unreachable")

    def between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        with self.lock:
            return [r for r in self.seen if start <= r[0] < end]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
