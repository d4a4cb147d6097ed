"""The console's aiohttp application: the page and its static files (all from the operator: no CDN, no build
step), sign-in and sign-out, and the namespace API of `routes`."""

from __future__ import annotations

import importlib.resources
import logging

from aiohttp import web

from kto_operator import naming
from kto_operator.console import routes
from kto_operator.console.web import (
    CONSOLE,
    MAX_TOKEN_CHARS,
    Console,
    Refused,
    UserSession,
    api_errors,
    console,
    is_tls,
    json_body,
    proxy_token,
    refusals,
    require_write,
    same_origin,
    security_headers,
    session_of,
)

log = logging.getLogger(__name__)

STATIC_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css",
                "favicon.svg": "image/svg+xml"}
# An access log line without headers, cookies or query strings: a token never reaches a log.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


def static_files() -> dict[str, bytes]:
    """The page's files, read once from the package."""
    folder = importlib.resources.files("kto_operator.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_TYPES}


def _signed_in(request: web.Request, session: UserSession) -> web.Response:
    state = console(request)
    return web.json_response({"user": session.username, "csrf": session.csrf, "namespaces": list(state.namespaces),
                              "oauthProxy": state.oauth_proxy})


async def _sign_in(request: web.Request, token: str) -> web.Response:
    """A session for `token` once the API server says whose it is (SelfSubjectReview made with that token)."""
    state = console(request)
    if not token or len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise Refused(400, "a token is one line of text, as `oc whoami -t` or `kubectl create token` prints it")
    client = state.user_api(token)
    session = None
    try:
        async with api_errors(request):
            username = await client.whoami()
        session = await state.store.create(username, token, client)
    except Refused as refused:
        if refused.status in (401, 403):
            raise Refused(401, "the API server refused this token") from refused
        raise
    finally:
        if session is None:  # no session took the client: its connections go now
            await client.close()
    log.info("console: %s signed in", username)
    response = _signed_in(request, session)
    response.set_cookie(naming.CONSOLE_COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                        secure=is_tls(request), max_age=int(state.store.ttl))
    return response


async def get_session(request: web.Request) -> web.Response:
    """Who is signed in, with the session's CSRF token (the page keeps it in memory, never in storage).
    Behind an oauth-proxy the forwarded token signs in by itself."""
    session = await session_of(request)
    if session is not None:
        return _signed_in(request, session)
    forwarded = proxy_token(request)
    if forwarded is not None:
        return await _sign_in(request, forwarded)
    raise Refused(401, "not signed in")


async def post_session(request: web.Request) -> web.Response:
    """Sign in with a bearer token (JSON {"token": ...}, never in a URL)."""
    if not same_origin(request):
        raise Refused(403, "cross-origin request refused")
    body = await json_body(request)
    old = await session_of(request)
    if old is not None:
        await console(request).store.drop(old.id)
    return await _sign_in(request, str(body.get("token") or "").strip())


async def sign_out(request: web.Request) -> web.Response:
    session = await require_write(request)
    await console(request).store.drop(session.id)
    log.info("console: %s signed out", session.username)
    response = web.json_response({"signedOut": True})
    response.del_cookie(naming.CONSOLE_COOKIE, path="/")
    return response


def build_app(state: Console, files: dict[str, bytes] | None = None) -> web.Application:
    files = static_files() if files is None else files
    app = web.Application(middlewares=[refusals], client_max_size=64 * 1024)
    app[CONSOLE] = state
    app.on_response_prepare.append(security_headers)

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=files["index.html"], content_type=STATIC_TYPES["index.html"], charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=files[name], content_type=STATIC_TYPES[name])

    async def closing(_: web.Application) -> None:
        await state.store.close()

    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/session", get_session)
    app.router.add_post("/api/session", post_session)
    app.router.add_post("/api/signout", sign_out)
    app.router.add_routes(routes.routes)
    app.on_cleanup.append(closing)
    return app
