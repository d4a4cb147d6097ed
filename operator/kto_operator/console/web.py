"""The console's shared request machinery: its state, the session of a request, the guard of every write (the
session's CSRF token in a header, and a same-origin Origin when the browser sends one), the security headers
of every response, and API errors turned into the page's messages (the API server's own words)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeAlias

import httpx
from aiohttp import web

from kto_operator import api, naming, times
from kto_operator.console.sessions import Session, SessionStore
from kto_operator.console.userapi import UserApi, UserApiFactory

log = logging.getLogger(__name__)

# Everything the page loads comes from the operator; no inline script or style anywhere.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Permission answers are asked again after this: a role granted or removed shows within seconds.
PERMISSION_TTL = 15.0
MAX_TOKEN_CHARS = 16384

# (tracking URI, MLflow run id, metric key) -> the metric's history as MLflow returns it.
HistoryFetcher = Callable[[str, str, str], Awaitable[list[dict[str, Any]]]]
UserSession: TypeAlias = Session[UserApi]


@dataclasses.dataclass
class Console:
    """The console's collaborators, one per process (kept in the aiohttp app)."""

    namespaces: tuple[str, ...]
    store: SessionStore[UserApi]
    user_api: UserApiFactory  # a client of the API server acting with a token, and nothing else
    history: HistoryFetcher
    tracking_uri: Callable[[Mapping[str, Any]], str]  # a TrainingRun's spec -> its tracking URI
    oauth_proxy: bool = False
    clock: Callable[[], datetime] = times.now


CONSOLE = web.AppKey("console", Console)


def console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Refused(Exception):
    """A request the console answers with an error of its own (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_tls(request: web.Request) -> bool:
    """Came over TLS, directly or through a TLS-terminating Route (X-Forwarded-Proto: https)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def same_origin(request: web.Request) -> bool:
    """An Origin header, when the browser sent one, names this very site (as the client reached it: the
    Route's host and scheme behind a router or an oauth-proxy)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (those carry Origin): the CSRF token decides
    scheme = "https" if is_tls(request) else "http"
    hosts = {request.host, request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()}
    return origin in {f"{scheme}://{h}" for h in hosts if h}


def proxy_token(request: web.Request) -> str | None:
    if not console(request).oauth_proxy:
        return None
    return request.headers.get(naming.CONSOLE_PROXY_TOKEN_HEADER) or None


async def session_of(request: web.Request) -> UserSession | None:
    """The request's live session. Behind an oauth-proxy the session must hold the token the proxy forwards
    now: another user signed in through the same browser ends the previous session."""
    state = console(request)
    session = await state.store.get(request.cookies.get(naming.CONSOLE_COOKIE))
    forwarded = proxy_token(request)
    if session is not None and forwarded is not None and session.token != forwarded:
        await state.store.drop(session.id)
        return None
    return session


async def require_session(request: web.Request) -> UserSession:
    session = await session_of(request)
    if session is None:
        raise Refused(401, "not signed in")
    return session


async def require_write(request: web.Request) -> UserSession:
    """Every POST: a session, a same-origin request, and the session's CSRF token in its header."""
    if not same_origin(request):
        raise Refused(403, "cross-origin request refused")
    session = await require_session(request)
    if not session.csrf_ok(request.headers.get(naming.CONSOLE_CSRF_HEADER)):
        raise Refused(403, f"missing or wrong {naming.CONSOLE_CSRF_HEADER} header")
    return session


def namespace_of(request: web.Request) -> str:
    namespace = request.match_info["namespace"]
    if namespace not in console(request).namespaces:
        raise Refused(404, f"namespace {namespace} is not served by this console")
    return namespace


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise Refused(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


@contextlib.asynccontextmanager
async def api_errors(request: web.Request, session: UserSession | None = None) -> AsyncIterator[None]:
    """The API server's answer as the page's: its status (403: RBAC's message, shown as is) and message; a
    token it no longer accepts (401) ends the session."""
    try:
        yield
    except api.ApiError as err:
        if err.status == 401 and session is not None:
            await console(request).store.drop(session.id)
        status = err.status if err.status in (401, 403, 404, 409, 422) else 502
        raise Refused(status, err.message) from err
    except httpx.HTTPError as err:
        log.warning("console: API server unreachable: %s", type(err).__name__)
        raise Refused(502, "the Kubernetes API server could not be reached") from err


@web.middleware
async def refusals(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as refused:
        return error(refused.status, refused.message)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, errors included."""
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    if is_tls(request):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
