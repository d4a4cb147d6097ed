"""A tiny synchronous client of the Kubernetes REST API on urllib3: raw JSON dicts (camelCase) in and out.

The operator's whole API surface is a dozen calls (get, list, create, merge-patch, delete); the `kubernetes`
client for them was ~50 MB of RSS and ~1,200 modules (its `client` package loads every model class).

Credentials come from kopf's own two logins (in-cluster service account, else kubeconfig), so the operator's
watches (kopf) and its calls (this module) authenticate the same way. Errors: ApiError for any non-2xx answer;
a connection that cannot be made stays a urllib3.exceptions.HTTPError, which the callers already handle."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import kopf
import urllib3
import yaml

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kto-operator"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Projected service-account tokens rotate (the kubelet rewrites the file well before expiry): re-read it this
# often instead of keeping the first one until it is refused.
TOKEN_MAX_AGE = 60.0


class ApiError(Exception):
    """The API server answered with a non-2xx status (its Status object's message in `message`)."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.message = status_message(body) or reason
        # One line: these go to logs, Events and status.
        super().__init__(f"{status} {reason}: {self.message}")


def status_message(body: bytes) -> str:
    """The `message` of a Kubernetes Status object; a non-JSON body (a proxy's page) shortened as it is."""
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return body.decode("utf-8", "replace").strip()[:300]
    return str(data.get("message") or "") if isinstance(data, dict) else str(data)[:300]


@dataclasses.dataclass(frozen=True)
class Resource:
    """A kind of namespaced object: `group` is "" for the core group (pods)."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """`/api/v1/namespaces/NS/pods[/NAME[/SUB]]`, `/apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME[/SUB]]`."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        parts = [base, "namespaces", quote(namespace, safe=""), self.plural]
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


def url(path: str, params: Mapping[str, str] | None = None) -> str:
    """The request target: query parameters are always in the URL (urllib3's `fields` would put them in the
    body of a PATCH or DELETE)."""
    return f"{path}?{urlencode(dict(params))}" if params else path


@dataclasses.dataclass(frozen=True)
class Login:
    """kopf's ConnectionInfo, plus the token file to re-read when the token comes from one."""

    info: kopf.ConnectionInfo
    token_path: str | None = None


def login(settings: kopf.OperatorSettings | None = None) -> Login:
    """The in-cluster service account, else the kubeconfig ($KUBECONFIG, ~/.kube/config): kopf's own logins.

    kopf's kubeconfig login ignores a user's `tokenFile` (the bed's pods get one; kubectl and client-go read
    it), so that one is read here."""
    settings = settings or kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings)
    if info is not None:
        return Login(info, SA_TOKEN)
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service-account token and no kubeconfig ($KUBECONFIG, ~/.kube/config)")
    token_path = None
    if not info.token and not info.username and not (info.certificate_path or info.certificate_data):
        token_path = kubeconfig_token_file(os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config"))
    if token_path:
        info = dataclasses.replace(info, token=read_token(token_path))
    return Login(info, token_path)


def kubeconfig_token_file(kubeconfig: str) -> str | None:
    """The current context's user's `tokenFile`, merged as kopf merges the files (the first one wins)."""
    current: str | None = None
    contexts: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for path in (os.path.expanduser(p.strip()) for p in kubeconfig.split(os.pathsep) if p.strip()):
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item["name"], item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(item["name"], item.get("user") or {})
    user = users.get(contexts.get(current or "", {}).get("user", ""), {})
    token_file = user.get("tokenFile")
    return str(token_file) if token_file else None


def read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def auth_header(info: kopf.ConnectionInfo) -> str | None:
    """The Authorization header, as kopf builds it for its own requests (so both authenticate alike)."""
    return info.as_http_headers().get("Authorization")


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    # One connection per thread that calls the API, so that no thread queues for a socket.
    pool_size: int = 8
    connect_timeout: float = 10.0
    # Bounded, unlike the kubernetes client's default: a silently dropped connection must fail the handler
    # (kopf retries it) rather than hold its thread forever.
    read_timeout: float = 60.0
    # Only a connection that could not be opened is retried here; what reached the server is never re-sent.
    connect_retries: int = 3


class Client:
    """One API server: a connection pool and a login. Thread-safe (urllib3's pool is; the token has a lock)."""

    def __init__(self, login: Login, options: ClientOptions = ClientOptions()) -> None:
        self._login = login
        parts = urlsplit(login.info.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise kopf.LoginError(f"API server {login.info.server!r}: not an http(s) URL")
        self.prefix = parts.path.rstrip("/")
        timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
        retries = urllib3.Retry(total=options.connect_retries, connect=options.connect_retries, read=0, status=0,
                                other=0, redirect=False, respect_retry_after_header=False)
        self._pool: urllib3.HTTPConnectionPool
        if parts.scheme == "https":
            # cert_reqs explicitly: urllib3 sets it on the context it is given, CERT_REQUIRED when left out.
            self._pool = urllib3.HTTPSConnectionPool(
                parts.hostname, parts.port or 443, maxsize=options.pool_size, timeout=timeout, retries=retries,
                ssl_context=login.info.as_ssl_context(),
                cert_reqs="CERT_NONE" if login.info.insecure else "CERT_REQUIRED")
        else:
            self._pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port or 80, maxsize=options.pool_size,
                                                    timeout=timeout, retries=retries)
        self._auth = auth_header(login.info)
        self._auth_read = time.monotonic()
        self._lock = threading.Lock()

    def _authorization(self) -> str | None:
        path = self._login.token_path
        if path is None or time.monotonic() - self._auth_read < TOKEN_MAX_AGE:
            return self._auth
        with self._lock:
            if time.monotonic() - self._auth_read >= TOKEN_MAX_AGE:
                try:
                    info = dataclasses.replace(self._login.info, token=read_token(path))
                    self._auth = auth_header(info)
                except OSError:
                    pass  # being rewritten, or briefly gone: the last token is still valid for a while
                self._auth_read = time.monotonic()
            return self._auth

    def request(self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
                params: Mapping[str, str] | None = None, content_type: str = JSON) -> dict[str, Any]:
        """The JSON answer ({} when empty). The body is always read whole: only then does the connection go
        back to the pool (unread, every call opened a new TLS connection)."""
        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        auth = self._authorization()
        if auth:
            headers["Authorization"] = auth
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = json.dumps(body).encode()
        response = self._pool.urlopen(method, url(self.prefix + path, params), body=payload, headers=headers,
                                      redirect=False, preload_content=True)
        if not 200 <= response.status < 300:
            raise ApiError(response.status, response.reason or "", response.data)
        if not response.data.strip():
            return {}
        data = json.loads(response.data)
        if not isinstance(data, dict):
            raise ApiError(response.status, "not a JSON object", response.data[:300])
        return data
