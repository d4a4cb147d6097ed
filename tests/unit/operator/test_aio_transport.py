"""lightkube's httpx requests over aiohttp (kto_operator.aio_transport), against a local aiohttp server."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from kto_operator.aio_transport import AiohttpTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def serve_and_call(handler: Handler, call: Callable[[httpx.AsyncClient, str], Awaitable[Any]],
                   timeout: float = 5.0) -> Any:
    async def main() -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        transport = AiohttpTransport(False, max_connections=4)
        client = httpx.AsyncClient(transport=transport, timeout=timeout)
        try:
            return await call(client, f"http://127.0.0.1:{port}")
        finally:
            await client.aclose()
            await runner.cleanup()

    return asyncio.run(main())


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"method": request.method, "path": request.path, "raw": request.raw_path,
                              "headers": dict(request.headers), "body": body.decode()},
                             headers={"X-Answer": "yes"}, status=201)


def test_method_path_encoded_query_headers_and_body_go_through_unchanged() -> None:
    async def call(client: httpx.AsyncClient, url: str) -> httpx.Response:
        return await client.patch(f"{url}/apis/kto.dev/v1/namespaces/ns/trainingruns/r/status",
                                  params={"fieldSelector": "involvedObject.uid=a b"},
                                  headers={"Authorization": "Bearer t", "Content-Type": "application/merge-patch+json"},
                                  content=b'{"status": {"phase": "Running"}}')

    answer = serve_and_call(echo, call)
    assert answer.status_code == 201 and answer.headers["X-Answer"] == "yes"
    seen = answer.json()
    assert (seen["method"], seen["path"]) == ("PATCH", "/apis/kto.dev/v1/namespaces/ns/trainingruns/r/status")
    assert seen["raw"].endswith("/r/status?fieldSelector=involvedObject.uid%3Da+b")  # as httpx encoded it
    assert seen["headers"]["Authorization"] == "Bearer t"
    assert seen["headers"]["Content-Type"] == "application/merge-patch+json"
    assert json.loads(seen["body"]) == {"status": {"phase": "Running"}}


def test_a_compressed_answer_arrives_decoded_and_errors_keep_their_status() -> None:
    payload = json.dumps({"kind": "Status", "message": "x" * 5000}).encode()

    async def gzipped(_: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(payload), status=403,
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def call(client: httpx.AsyncClient, url: str) -> httpx.Response:
        return await client.get(f"{url}/api/v1/namespaces/ns/pods")

    answer = serve_and_call(gzipped, call)
    assert answer.status_code == 403 and answer.json()["message"] == "x" * 5000


def test_no_redirect_is_followed() -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/first":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        return web.Response(text="ok")

    async def call(client: httpx.AsyncClient, url: str) -> list[int]:
        return [(await client.get(f"{url}/first")).status_code, (await client.get(f"{url}/second")).status_code]

    assert serve_and_call(handler, call) == [302, 200]
    assert hits == ["/first", "/second"]


def test_connections_are_kept_alive_and_reused() -> None:
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    async def call(client: httpx.AsyncClient, url: str) -> None:
        for _ in range(20):
            await asyncio.gather(*(client.get(f"{url}/x") for _ in range(4)))

    serve_and_call(handler, call)
    assert len(peers) <= 4  # the pool's size: 80 requests, at most 4 connections


def test_failures_are_httpx_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    async def refused(client: httpx.AsyncClient, _: str) -> None:
        await client.get(f"http://127.0.0.1:{closed_port}/")

    with pytest.raises(httpx.ConnectError):
        serve_and_call(echo, refused)

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def call(client: httpx.AsyncClient, url: str) -> None:
        await client.get(f"{url}/slow")

    with pytest.raises(httpx.TimeoutException):
        serve_and_call(slow, call, timeout=0.2)

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.Response(text="never sent")

    with pytest.raises(httpx.TransportError):
        serve_and_call(hang_up, call)
