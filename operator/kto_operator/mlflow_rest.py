"""A small client of MLflow's REST API (`/api/2.0/mlflow/...`) on urllib3. The operator makes a dozen kinds of
calls; MLflow's own client would bring in more modules and memory for them than the rest of the operator.

Errors come out as two types the handlers map to phases: MlflowUnavailable (retry later) and TrackingError."""

from __future__ import annotations

import base64
import dataclasses
import http
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import urllib3

API_PATH = "/api/2.0/mlflow/"
USER_AGENT = "kto-operator"
# What MLflow's client accepts for its boolean variables.
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0", ""})
_USERINFO_RE = re.compile(r"(\w+://)[^/@\s]+@")


class MlflowUnavailable(Exception):
    """MLflow cannot be reached or answered 5xx/429: retry later."""


class TrackingError(Exception):
    """MLflow refused the request for a reason that retrying will not fix (e.g. a deleted experiment)."""

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        # MLflow's error_code (RESOURCE_ALREADY_EXISTS, ...): some refusals are an answer, not a failure.
        self.error_code = error_code


def redact(text: str) -> str:
    """Hide credentials written into a URL (https://user:password@host): messages go to status and Events."""
    return _USERINFO_RE.sub(r"\1***@", text)


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """Timeouts, retries and pool size of every tracking server's client."""

    # Short: an outage must become MlflowUnavailable quickly, and the handlers retry it with backoff.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # Only a connection that could not be opened is retried here: a request that reached the server is
    # never sent again (a second runs/create would be a second run).
    connect_retries: int = 1
    # One connection per thread that may call MLflow (the start threads and kopf's handler threads), so
    # that no thread waits for a socket and no connection is opened only to be thrown away.
    pool_size: int = 48


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The environment variables MLflow's own client reads for a tracking server, read the same way."""

    username: str = ""
    password: str = ""
    token: str = ""
    insecure_tls: bool = False
    server_cert_path: str = ""
    client_cert_path: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        creds = cls(
            username=env.get("MLFLOW_TRACKING_USERNAME", ""),
            password=env.get("MLFLOW_TRACKING_PASSWORD", ""),
            token=env.get("MLFLOW_TRACKING_TOKEN", ""),
            insecure_tls=_flag(env, "MLFLOW_TRACKING_INSECURE_TLS"),
            server_cert_path=env.get("MLFLOW_TRACKING_SERVER_CERT_PATH", ""),
            client_cert_path=env.get("MLFLOW_TRACKING_CLIENT_CERT_PATH", ""),
        )
        if creds.insecure_tls and creds.server_cert_path:
            raise TrackingError("MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH are both set: "
                                "either skip the server's certificate check or name the CA that signed it")
        return creds


def _flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw not in _TRUE | _FALSE:
        raise TrackingError(f"{key} must be true or false, got {raw!r}")
    return raw in _TRUE


@dataclasses.dataclass(frozen=True)
class Target:
    """A tracking URI taken apart: where to connect, the path the API hangs under, and a login written in it."""

    scheme: str
    host: str
    port: int
    prefix: str = ""
    username: str = ""
    password: str = ""

    @property
    def origin(self) -> str:
        """The URI without its login, for messages."""
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    @classmethod
    def parse(cls, uri: str) -> Target:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https"):
            raise TrackingError(f"tracking URI {redact(uri)!r}: the operator talks to an MLflow tracking server "
                                "over http:// or https:// only (file:, sqlite:, databricks: not supported)")
        try:
            port = parts.port
        except ValueError:
            raise TrackingError(f"tracking URI {redact(uri)!r}: bad port") from None
        if not parts.hostname:
            raise TrackingError(f"tracking URI {redact(uri)!r}: no host")
        return cls(scheme=parts.scheme, host=parts.hostname, port=port or (443 if parts.scheme == "https" else 80),
                   prefix=parts.path.rstrip("/"), username=unquote(parts.username or ""),
                   password=unquote(parts.password or ""))


def auth_header(target: Target, creds: Credentials) -> str | None:
    """The Authorization header MLflow's client would send: a login in the URI wins (requests takes it over any
    header), then MLFLOW_TRACKING_USERNAME/PASSWORD, then MLFLOW_TRACKING_TOKEN."""
    if target.username or target.password:
        return _basic(target.username, target.password)
    if creds.username and creds.password:
        return _basic(creds.username, creds.password)
    if creds.token:
        return f"Bearer {creds.token}"
    return None


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def error_for(status: int, body: bytes, what: str) -> MlflowUnavailable | TrackingError:
    """The exception for a non-2xx answer: 5xx and 429 are an outage (retry), anything else a refusal."""
    code, message = _error_fields(body)
    if not message:
        message = _reason(status)
    text = redact(f"{what}: {code}: {message}" if code else f"{what}: HTTP {status}: {message}")
    if status >= 500 or status == 429:
        return MlflowUnavailable(text)
    return TrackingError(text, code)


def _error_fields(body: bytes) -> tuple[str | None, str]:
    """MLflow's {"error_code", "message"}; a proxy's or an auth page's text as it is (shortened)."""
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        return None, body.decode("utf-8", "replace").strip()[:300]
    if not isinstance(data, dict):
        return None, str(data)[:300]
    code = data.get("error_code")
    return (str(code) if code else None), str(data.get("message") or "")


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no message"


class RestClient:
    """One tracking server: its connection pool, login and timeouts. Thread-safe (urllib3's pool is)."""

    def __init__(self, uri: str, options: ClientOptions, env: Mapping[str, str]) -> None:
        self.target = Target.parse(uri)
        creds = Credentials.from_env(env)
        self._headers = {"User-Agent": USER_AGENT}
        auth = auth_header(self.target, creds)
        if auth:
            self._headers["Authorization"] = auth
        self._pool = _pool(self.target, creds, options)

    def get(self, endpoint: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        return self._call("GET", endpoint, what, fields=dict(params))

    def post(self, endpoint: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        return self._call("POST", endpoint, what, json=dict(body))

    def _call(self, method: str, endpoint: str, what: str, **request: Any) -> dict[str, Any]:
        url = f"{self.target.prefix}{API_PATH}{endpoint}"
        try:
            response = self._pool.request(method, url, headers=self._headers, redirect=False, **request)
        except urllib3.exceptions.HTTPError as exc:
            # Refused, reset, timed out, TLS failure: MLflow's client reports all of these as retryable too.
            # After the connect retry the cause is in .reason (the wrapper only repeats host and path).
            cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason else exc
            raise MlflowUnavailable(redact(f"{what}: MLflow at {self.target.origin} unreachable: {cause}")) from exc
        if 300 <= response.status < 400:
            # A pool is bound to one host: say where it points rather than follow it.
            location = response.headers.get("Location", "?")
            raise TrackingError(redact(f"{what}: MLflow at {self.target.origin} redirects to {location}; "
                                       "use that as the tracking URI"))
        if not 200 <= response.status < 300:
            raise error_for(response.status, response.data, what)
        return _json(response.data, what, self.target.origin)


def _json(body: bytes, what: str, origin: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # E.g. the URI points at a login page or a proxy's HTML: no retry makes it MLflow's API.
        raise TrackingError(redact(f"{what}: {origin} answered something other than MLflow's JSON API"))
    return data


def _pool(target: Target, creds: Credentials, options: ClientOptions) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout)
    # No status retries and no Retry-After sleeps: 429/5xx go back to the handlers, which retry with backoff.
    retries = urllib3.Retry(total=options.connect_retries, connect=options.connect_retries, read=0, status=0,
                            other=0, redirect=False, respect_retry_after_header=False)
    if target.scheme == "http":
        return urllib3.HTTPConnectionPool(target.host, target.port, timeout=timeout, retries=retries,
                                          maxsize=options.pool_size)
    # Like requests (MLflow's client): certifi's CAs unless a CA bundle is named.
    return urllib3.HTTPSConnectionPool(
        target.host, target.port, timeout=timeout, retries=retries, maxsize=options.pool_size,
        cert_reqs="CERT_NONE" if creds.insecure_tls else "CERT_REQUIRED",
        ca_certs=None if creds.insecure_tls else (creds.server_cert_path or certifi.where()),
        cert_file=creds.client_cert_path or None,
    )
