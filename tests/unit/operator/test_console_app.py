"""The console's HTTP surface (aiohttp's test server) over a small fake of the user-API layer: sign-in with a
token the API server accepts, the session cookie's flags, CSRF and Origin on every write, the security
headers, RBAC refusals shown with the API server's words, and writes made with the user's own client.
The real API server and a real browser: tests/integration/test_console.py."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kto_operator import api, naming
from kto_operator.console.app import build_app, static_files
from kto_operator.console.sessions import SessionStore
from kto_operator.console.userapi import UserApi
from kto_operator.console.web import CSP, Console

NS = "team-a"
EDIT, VIEW = "edit-token", "view-token"
USERS = {EDIT: ("alice", True), VIEW: ("victor", False)}
FORBIDDEN = 'trainingruns.kto.dev "r1" is forbidden: User "victor" cannot patch resource "trainingruns"'


class World:
    """What the fake API server holds, and the calls made to it with each token."""

    def __init__(self) -> None:
        self.runs = {"r1": {"metadata": {"name": "r1", "namespace": NS, "creationTimestamp": "2026-11-26T07:00:00Z"},
                            "spec": {"image": "img", "experiment": "exp", "parameters": {"epochs": 2}},
                            "status": {"phase": "Running", "progress": {"epoch": 1, "epochs": 2},
                                       "metrics": {"loss": 0.5}, "mlflow": {"runId": "abc"}}}}
        self.powers = [{"metadata": {"name": "platform", "creationTimestamp": "2026-01-01T00:00:00Z"},
                        "spec": {"state": "on"}, "status": {"state": "On", "reason": "Manual"}}]
        self.calls: list[tuple[str, str, Any]] = []  # (token, call, argument)
        self.closed: list[str] = []


class FakeUserApi:
    def __init__(self, token: str, world: World) -> None:
        self.token, self.world = token, world

    def _user(self) -> tuple[str, bool]:
        if self.token not in USERS:
            raise api.ApiError(401, "Unauthorized", "Unauthorized")
        return USERS[self.token]

    def _write(self, verb: str, resource: str) -> None:
        _, may_write = self._user()
        if not may_write:
            raise api.ApiError(403, "Forbidden", FORBIDDEN)

    async def whoami(self) -> str:
        return self._user()[0]

    async def can(self, namespace: str, verb: str, resource: str) -> tuple[bool, str]:
        self.world.calls.append((self.token, "can", (verb, resource)))
        return self._user()[1], ""

    async def runs(self, namespace: str) -> list[dict[str, Any]]:
        self._user()
        return copy.deepcopy(list(self.world.runs.values()))

    async def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._user()
        return copy.deepcopy(self.world.runs.get(name))

    async def patch_run(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        self._write("patch", "trainingruns")
        self.world.calls.append((self.token, "patch_run", (name, patch)))
        return self.world.runs.get(name)

    async def create_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self._write("create", "trainingruns")
        self.world.calls.append((self.token, "create_run", body))
        return {**body, "metadata": {**body["metadata"], "name": body["metadata"]["generateName"] + "x7k2p"}}

    async def powers(self, namespace: str) -> list[dict[str, Any]]:
        self._user()
        return copy.deepcopy(self.world.powers)

    async def patch_power(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        self._write("patch", "powerschedules")
        self.world.calls.append((self.token, "patch_power", (name, patch)))
        return self.world.powers[0]

    async def workloads(self, namespace: str) -> dict[str, list[dict[str, Any]]]:
        self._user()
        return {"StatefulSet": [], "Deployment": [], "CronJob": []}

    async def close(self) -> None:
        self.world.closed.append(self.token)


async def history(uri: str, run_id: str, key: str) -> list[dict[str, Any]]:
    assert (uri, run_id, key) == ("http://mlflow:5000", "abc", "loss")
    return [{"step": 0, "value": 0.9, "timestamp": 1}, {"step": 1, "value": 0.5, "timestamp": 2}]


Scenario = Callable[[TestClient[Any, Any], World], Awaitable[None]]


def serve(scenario: Scenario, *, oauth_proxy: bool = False) -> World:
    world = World()

    def user_api(token: str) -> UserApi:
        return FakeUserApi(token, world)

    state = Console(namespaces=(NS,), store=SessionStore[UserApi](ttl=3600), user_api=user_api, history=history,
                    tracking_uri=lambda spec: "http://mlflow:5000", oauth_proxy=oauth_proxy,
                    clock=lambda: datetime(2026, 11, 26, 8, 0, tzinfo=UTC))

    async def main() -> None:
        async with TestClient(TestServer(build_app(state))) as client:
            await scenario(client, world)

    asyncio.run(main())
    return world


async def sign_in(client: TestClient[Any, Any], token: str) -> str:
    response = await client.post("/api/session", json={"token": token})
    assert response.status == 200, await response.text()
    return str((await response.json())["csrf"])


def test_the_page_and_its_files_come_from_the_operator_under_a_strict_csp() -> None:
    async def scenario(client: TestClient[Any, Any], _: World) -> None:
        page = await client.get("/")
        html = await page.text()
        assert page.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        assert (page.headers["X-Content-Type-Options"], page.headers["Referrer-Policy"]) == ("nosniff", "no-referrer")
        assert "<script src=\"/static/app.js\"" in html and "<style" not in html and " style=" not in html
        assert "http://" not in html and "https://" not in html  # no CDN
        js = await client.get("/static/app.js")
        assert js.status == 200 and js.content_type == "text/javascript"
        assert (await client.get("/static/secrets.env")).status == 404
        assert (await client.get("/static/..%2f__init__.py")).status == 404

    serve(scenario)


def test_static_files_ship_with_the_package() -> None:
    files = static_files()
    assert set(files) == {"index.html", "app.js", "style.css", "favicon.svg"}
    assert b"innerHTML" not in files["app.js"]  # text only: data never becomes markup


def test_sign_in_sets_an_httponly_strict_cookie_and_a_wrong_token_is_refused() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        assert (await client.get("/api/session")).status == 401
        wrong = await client.post("/api/session", json={"token": "nope"})
        assert wrong.status == 401 and "refused this token" in (await wrong.json())["error"]
        assert world.closed == ["nope"]  # the refused token's client is closed at once
        assert (await client.post("/api/session", json={"token": "two words"})).status == 400
        response = await client.post("/api/session", json={"token": EDIT})
        cookie = response.headers["Set-Cookie"]
        assert naming.CONSOLE_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP (the bed); behind a TLS Route: below
        assert EDIT not in cookie
        body = await response.json()
        assert (body["user"], body["namespaces"]) == ("alice", [NS]) and body["csrf"]
        session = await (await client.get("/api/session")).json()
        assert session["csrf"] == body["csrf"]

    serve(scenario)


def test_the_cookie_is_secure_behind_a_tls_route() -> None:
    async def scenario(client: TestClient[Any, Any], _: World) -> None:
        response = await client.post("/api/session", json={"token": EDIT}, headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers["Set-Cookie"]
        assert "Strict-Transport-Security" in response.headers

    serve(scenario)


def test_overview_as_the_user() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        await sign_in(client, EDIT)
        response = await client.get(f"/api/namespaces/{NS}/overview")
        assert response.headers["Cache-Control"] == "no-store"
        data = await response.json()
        assert data["runs"][0]["progress"] == {"epoch": 1, "epochs": 2, "percent": 50}
        assert (data["power"]["state"], data["power"]["on"]) == ("On", True)
        assert all(p["allowed"] for p in data["permissions"].values())
        assert {t for t, _, _ in world.calls} == {EDIT}
        assert (await client.get("/api/namespaces/other/overview")).status == 404

    serve(scenario)


def test_writes_need_the_csrf_token_and_a_same_origin() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        csrf = await sign_in(client, EDIT)
        path = f"/api/namespaces/{NS}/runs/r1/cancel"
        assert (await client.post(path)).status == 403
        assert (await client.post(path, headers={naming.CONSOLE_CSRF_HEADER: "guess"})).status == 403
        evil = await client.post(path, headers={naming.CONSOLE_CSRF_HEADER: csrf, "Origin": "https://evil.example"})
        assert evil.status == 403
        assert not [c for c in world.calls if c[1] == "patch_run"]
        origin = f"http://{client.host}:{client.port}"
        ok = await client.post(path, headers={naming.CONSOLE_CSRF_HEADER: csrf, "Origin": origin})
        assert ok.status == 200
        assert world.calls[-1] == (EDIT, "patch_run", ("r1", {"spec": {"cancel": True}}))

    serve(scenario)


def test_a_view_user_sees_why_and_a_direct_write_gets_the_api_servers_403() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        csrf = await sign_in(client, VIEW)
        data = await (await client.get(f"/api/namespaces/{NS}/overview")).json()
        assert data["runs"] and not data["permissions"]["cancelRun"]["allowed"]
        assert data["permissions"]["switchPower"]["reason"] == f"victor may not patch powerschedules in namespace {NS}"
        refused = await client.post(f"/api/namespaces/{NS}/runs/r1/cancel", headers={naming.CONSOLE_CSRF_HEADER: csrf})
        assert refused.status == 403 and (await refused.json())["error"] == FORBIDDEN

    serve(scenario)


def test_switch_run_again_and_history() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        headers = {naming.CONSOLE_CSRF_HEADER: await sign_in(client, EDIT)}
        off = await client.post(f"/api/namespaces/{NS}/power", json={"state": "off"}, headers=headers)
        assert off.status == 200
        assert world.calls[-1] == (EDIT, "patch_power", ("platform", {"spec": {"state": "off"}}))
        bad = await client.post(f"/api/namespaces/{NS}/power", json={"state": "dim"}, headers=headers)
        assert bad.status == 400
        again = await client.post(f"/api/namespaces/{NS}/runs/r1/rerun", json={"parameters": {"epochs": 5}},
                                  headers=headers)
        assert again.status == 201 and (await again.json())["name"] == "r1-x7k2p"
        created = next(arg for _, call, arg in reversed(world.calls) if call == "create_run")
        assert created["spec"]["parameters"] == {"epochs": 5} and created["metadata"]["generateName"] == "r1-"
        chart = await (await client.get(f"/api/namespaces/{NS}/runs/r1/history")).json()
        assert chart == {"metric": "loss", "points": [{"step": 0, "value": 0.9}, {"step": 1, "value": 0.5}]}
        assert (await client.get(f"/api/namespaces/{NS}/runs/r1/history?metric=secret")).status == 404
        assert (await client.get(f"/api/namespaces/{NS}/runs/nope/history")).status == 404
        page = await (await client.get(f"/api/namespaces/{NS}/runs/r1")).json()
        assert page["run"]["parameters"] == {"epochs": 2}

    serve(scenario)


def test_sign_out_closes_the_users_client_and_ends_the_session() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        csrf = await sign_in(client, EDIT)
        assert (await client.post("/api/signout")).status == 403  # without CSRF
        out = await client.post("/api/signout", headers={naming.CONSOLE_CSRF_HEADER: csrf})
        assert out.status == 200 and world.closed == [EDIT]
        assert (await client.get(f"/api/namespaces/{NS}/overview")).status == 401

    serve(scenario)


def test_behind_an_oauth_proxy_the_forwarded_token_signs_in_and_a_new_one_replaces_it() -> None:
    async def scenario(client: TestClient[Any, Any], world: World) -> None:
        header = naming.CONSOLE_PROXY_TOKEN_HEADER
        first = await (await client.get("/api/session", headers={header: EDIT})).json()
        assert first["user"] == "alice"
        assert (await client.get(f"/api/namespaces/{NS}/overview", headers={header: VIEW})).status == 401
        assert world.closed == [EDIT]
        second = await (await client.get("/api/session", headers={header: VIEW})).json()
        assert second["user"] == "victor"

    serve(scenario, oauth_proxy=True)


def test_the_proxy_header_is_ignored_unless_enabled() -> None:
    async def scenario(client: TestClient[Any, Any], _: World) -> None:
        assert (await client.get("/api/session", headers={naming.CONSOLE_PROXY_TOKEN_HEADER: EDIT})).status == 401

    serve(scenario)


def test_no_token_in_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(client: TestClient[Any, Any], _: World) -> None:
        csrf = await sign_in(client, EDIT)
        await client.get(f"/api/namespaces/{NS}/overview")
        await client.post("/api/signout", headers={naming.CONSOLE_CSRF_HEADER: csrf})
        await client.post("/api/session", json={"token": "wrong-token"})

    with caplog.at_level(logging.DEBUG):
        serve(scenario)
    assert "alice signed in" in caplog.text
    assert EDIT not in caplog.text and "wrong-token" not in caplog.text
