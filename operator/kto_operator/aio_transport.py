"""httpx's transport interface over aiohttp, the HTTP client kopf already runs: lightkube (and the MLflow client)
keep their httpx API, the requests go through aiohttp's connector.

Why not httpx's own transport: httpcore's pool looks at every pooled connection, with socket syscalls, for each
request (its cost grows with the pool); aiohttp's connector takes a pooled connection in constant time, and its
HTTP parser is compiled.

Bodies are read whole (no streaming: none of our calls watches); redirects are the caller's (httpx follows
none unless asked); aiohttp's errors become httpx's, so callers catch one family (httpx.HTTPError)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
from yarl import URL

# Headers of the compressed body that aiohttp has already decompressed: they no longer describe the content.
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _timeout(extensions: Mapping[str, Any]) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts as aiohttp's: `pool` bounds getting a connection (a free one or a new one),
    `connect` the connection itself, `read` each read; aiohttp has no write timeout (a request is written at once)."""
    t = extensions.get("timeout") or {}
    connect = t.get("connect")
    return aiohttp.ClientTimeout(total=None, connect=t.get("pool"), sock_connect=connect, sock_read=t.get("read"))


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, inside the event loop) with a bounded pool of kept-alive
    connections."""

    def __init__(self, ssl_context: ssl.SSLContext | bool, max_connections: int,
                 keepalive_expiry: float = 60.0, connect_retries: int = 0) -> None:
        """`connect_retries`: how often a connection that could not be opened (refused, connect timeout) is tried
        again at once; a request that reached the server is never sent twice."""
        self.ssl_context, self.max_connections, self.keepalive_expiry = ssl_context, max_connections, keepalive_expiry
        self.connect_retries = connect_retries
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context, limit=self.max_connections,
                                             keepalive_timeout=self.keepalive_expiry)
            # No cookie jar, no proxy or .netrc from the environment: every request carries what the caller set.
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                  trust_env=False, auto_decompress=True)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self.connect_retries):
            try:
                return await self._send(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                continue
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        # The names as the caller spelled them (httpx's multi_items() lowercases them); aiohttp sets Host itself.
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw if k.lower() != b"host"]
        try:
            async with self._open().request(request.method, URL(str(request.url), encoded=True), headers=headers,
                                            data=body or None, allow_redirects=False,
                                            timeout=_timeout(request.extensions)) as answer:
                content = await answer.read()
                kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _DECODED]
                return httpx.Response(answer.status, headers=kept, content=content, request=request)
        except aiohttp.ConnectionTimeoutError as exc:  # no connection, so the request never left
            raise httpx.ConnectTimeout(f"{request.url.host}: connect timed out", request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{request.method} {request.url.path}: timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:  # the connection dropped, a malformed answer
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
