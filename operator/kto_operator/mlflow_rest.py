"""A small client of MLflow's REST API (`/api/2.0/mlflow/...`) on httpx, async: the handlers await MLflow on
kopf's event loop, no thread in between. The operator makes a dozen kinds of calls; MLflow's own client would
bring in more modules and memory for them than the rest of the operator, and would block.

Errors come out as two types the handlers map to phases: MlflowUnavailable (retry later) and TrackingError."""

from __future__ import annotations

import base64
import dataclasses
import http
import json
import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import httpx

from .aio_transport import AiohttpTransport

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
    # One connection per handler that may await MLflow at once (the start and follow slots), so that no
    # handler waits for a socket and no connection is opened only to be thrown away.
    pool_size: int = 48
    # The tracking URI whose server may receive the login of the environment (MLFLOW_TRACKING_USERNAME/PASSWORD,
    # MLFLOW_TRACKING_TOKEN): the operator's own. Any other server (a TrainingRun's spec.mlflow.trackingUri,
    # which its author chooses) gets only a login written into its URI. Empty: every server (a single-server
    # client, e.g. the bench's).
    credentials_for: str = ""


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


def same_server(a: Target, b: Target) -> bool:
    return (a.scheme, a.host.lower(), a.port) == (b.scheme, b.host.lower(), b.port)


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
    """One tracking server: its connection pool, login and timeouts. Used from one event loop (httpx's
    connections belong to the loop that opened them); `close` when done."""

    def __init__(self, uri: str, options: ClientOptions, env: Mapping[str, str]) -> None:
        self.target = Target.parse(uri)
        creds = Credentials.from_env(env)
        if options.credentials_for and not same_server(self.target, Target.parse(options.credentials_for)):
            creds = dataclasses.replace(creds, username="", password="", token="")
        headers = {"User-Agent": USER_AGENT}
        auth = auth_header(self.target, creds)
        if auth:
            headers["Authorization"] = auth
        self._http = _client(self.target, creds, options, headers)

    async def get(self, endpoint: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        return await self._call("GET", endpoint, what, params=dict(params))

    async def post(self, endpoint: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        return await self._call("POST", endpoint, what, json=dict(body))

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, endpoint: str, what: str, **request: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, endpoint, **request)
        except httpx.HTTPError as exc:
            # Refused, reset, timed out, TLS failure: MLflow's client reports all of these as retryable too.
            # Some of httpx's errors have no text: then their type says what happened.
            cause = str(exc) or type(exc).__name__
            raise MlflowUnavailable(redact(f"{what}: MLflow at {self.target.origin} unreachable: {cause}")) from exc
        if 300 <= response.status_code < 400:
            # A client is bound to one server: say where it points rather than follow it.
            location = response.headers.get("Location", "?")
            raise TrackingError(redact(f"{what}: MLflow at {self.target.origin} redirects to {location}; "
                                       "use that as the tracking URI"))
        if not 200 <= response.status_code < 300:
            raise error_for(response.status_code, response.content, what)
        return _json(response.content, what, self.target.origin)


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


def _client(target: Target, creds: Credentials, options: ClientOptions,
            headers: Mapping[str, str]) -> httpx.AsyncClient:
    # retries: only a connection that could not be opened (refused, connect timeout), never a request that
    # reached the server. No status retries: 429/5xx go back to the handlers, which retry with backoff.
    # No pool timeout: the handlers' slots bound the waiters, and each holder is bound by the read timeout.
    # trust_env=False: no proxy variables and no .netrc login (MLflow's client takes its login from MLFLOW_*).
    transport = AiohttpTransport(_tls(target, creds), options.pool_size, connect_retries=options.connect_retries)
    base = httpx.URL(scheme=target.scheme, host=target.host, port=target.port, path=f"{target.prefix}{API_PATH}")
    timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout, pool=None)
    return httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport,
                             follow_redirects=False, trust_env=False)


def _tls(target: Target, creds: Credentials) -> ssl.SSLContext | bool:
    """Like requests (MLflow's client): certifi's CAs unless a CA bundle is named; a client certificate if named."""
    if target.scheme == "http":
        return False
    try:
        if creds.insecure_tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=creds.server_cert_path or certifi.where())
        if creds.client_cert_path:
            context.load_cert_chain(creds.client_cert_path)
    except OSError as exc:  # a missing or unreadable file, or ssl.SSLError (an OSError): not a PEM
        raise TrackingError(f"MLflow at {target.origin}: TLS files from MLFLOW_TRACKING_*_CERT_PATH: {exc}") from exc
    return context
