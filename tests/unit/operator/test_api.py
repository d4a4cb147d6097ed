"""kto_operator.api against httpx.MockTransport: the requests lightkube sends for each call (paths, verbs,
merge patches, DeleteOptions, paging), errors mapped to ours, 429 honouring Retry-After, token files re-read, and
kopf's login from the same kubeconfig (an exec plugin included). The real API server: tests/integration."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from kto_operator import api, connection
from lightkube import KubeConfig
from lightkube.config.kubeconfig import SingleConfig

SERVER = "http://k8s.test"
Handler = Callable[[httpx.Request], httpx.Response]


def status(code: int, message: str = "nope") -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                      "message": message})


def config(tmp_path: Path, user: dict[str, Any] | None = None) -> SingleConfig:
    raw = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "k", "cluster": {"server": SERVER}}],
           "users": [{"name": "u", "user": user if user is not None else {"token": "static"}}],
           "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(raw))
    return KubeConfig.from_file(path).get()


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def connect(tmp_path: Path, handler: Handler, **options: Any) -> tuple[api.Api, Recorder]:
    recorder = Recorder(handler)
    client = api.Api.connect(api.Options(**options), config(tmp_path), inner=httpx.MockTransport(recorder))
    return client, recorder


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_get_returns_the_dict_or_none_and_maps_errors(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "there":
            return httpx.Response(200, json={"metadata": {"name": "there"}, "spec": {"x": 1}})
        return status(404) if name == "gone" else status(403, "forbidden: no")

    client, seen = connect(tmp_path, handler)
    # lightkube fills in apiVersion and kind (list items lack them), as the API server sends them on a get.
    assert run(client.get(api.JOBS, "ns", "there")) == {"apiVersion": "batch/v1", "kind": "Job",
                                                        "metadata": {"name": "there"}, "spec": {"x": 1}}
    assert run(client.get(api.RUNS, "ns", "gone")) is None
    with pytest.raises(api.ApiError) as err:
        run(client.get(api.PODS, "ns", "secret"))
    assert (err.value.status, err.value.message) == (403, "forbidden: no")
    assert [r.url.path for r in seen.requests] == [
        "/apis/batch/v1/namespaces/ns/jobs/there", "/apis/kto.dev/v1alpha1/namespaces/ns/trainingruns/gone",
        "/api/v1/namespaces/ns/pods/secret"]
    assert seen.requests[0].headers["Authorization"] == "Bearer static"
    assert seen.requests[0].headers["User-Agent"] == api.USER_AGENT


def test_list_follows_pages_with_selectors_and_tolerates_an_absent_kind(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "powerschedules" in request.url.path:
            return status(404, "the server could not find the requested resource")
        token = request.url.params.get("continue")
        page = {"metadata": {"continue": "p2"} if not token else {}, "items": [{"n": 2 if token else 1}]}
        return httpx.Response(200, json=page)

    client, seen = connect(tmp_path, handler, page_size=1)
    pods = run(client.list(api.PODS, "ns", labels={"kto.dev/trainingrun-uid": "u1"}, fields={"a.b": "c"}))
    assert [p["n"] for p in pods] == [1, 2]
    first = seen.requests[0].url.params
    assert (first["labelSelector"], first["fieldSelector"], first["limit"]) == ("kto.dev/trainingrun-uid=u1",
                                                                                "a.b=c", "1")
    assert seen.requests[1].url.params["continue"] == "p2"
    assert run(client.list(api.POWERS, "ns")) == []


def test_patch_is_a_merge_patch_of_the_object_or_its_status(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gone"):
            return status(404)
        if request.url.path.endswith("/busy"):
            return status(409, "the object has been modified")
        return httpx.Response(200, json={"patched": json.loads(request.content)})

    client, seen = connect(tmp_path, handler)
    patched = run(client.patch(api.RUNS, "ns", "r", {"status": {"phase": "Running"}}, status=True))
    assert patched["patched"] == {"status": {"phase": "Running"}}
    assert seen.requests[0].method == "PATCH"
    assert seen.requests[0].url.path == "/apis/kto.dev/v1alpha1/namespaces/ns/trainingruns/r/status"
    assert seen.requests[0].headers["Content-Type"] == "application/merge-patch+json"
    assert run(client.patch(api.DEPLOYMENTS, "ns", "gone", {"spec": {"replicas": 0}})) is None
    with pytest.raises(api.Conflict):
        run(client.patch(api.STATEFULSETS, "ns", "busy", {"spec": {"replicas": 0}}))


def test_create_owned_adopts_ours_and_refuses_others_and_invalid(tmp_path: Path) -> None:
    existing = {"metadata": {"name": "j", "uid": "job-uid", "ownerReferences": [{"uid": "mine"}]}}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            if body["metadata"]["name"] == "bad":
                return status(422, "spec.template: invalid")
            if body["metadata"]["name"] == "undecodable":
                return status(400, "cannot unmarshal number 2875451371 into Go struct field of type int32")
            return status(409, "already exists") if body["metadata"]["name"] == "j" else httpx.Response(201, json=body)
        return httpx.Response(200, json=existing)

    client, seen = connect(tmp_path, handler)
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "new", "namespace": "ns"}}
    assert run(client.create_owned(api.JOBS, manifest, "mine")) is True
    assert json.loads(seen.requests[0].content) == manifest
    assert seen.requests[0].url.path == "/apis/batch/v1/namespaces/ns/jobs"
    ours = {**manifest, "metadata": {"name": "j", "namespace": "ns"}}
    assert run(client.create_owned(api.JOBS, ours, "mine")) is False
    with pytest.raises(api.JobConflict, match="does not belong"):
        run(client.create_owned(api.JOBS, ours, "another"))
    with pytest.raises(api.JobRejected, match="invalid"):
        run(client.create_owned(api.SERVICES, {**manifest, "metadata": {"name": "bad", "namespace": "ns"}}, "mine"))
    with pytest.raises(api.JobRejected, match="int32"):
        run(client.create_owned(api.JOBS, {**manifest, "metadata": {"name": "undecodable", "namespace": "ns"}}, "mine"))


def test_delete_owned_sends_background_propagation_and_the_uid_precondition(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            owner = "mine" if request.url.path.endswith("/j") else "another"
            return httpx.Response(200, json={"metadata": {"uid": "job-uid", "ownerReferences": [{"uid": owner}]}})
        return httpx.Response(200, json={"kind": "Status", "status": "Success"})

    client, seen = connect(tmp_path, handler)
    assert run(client.delete_owned(api.JOBS, "ns", "j", "mine")) is True
    delete = seen.requests[-1]
    assert (delete.method, delete.url.path) == ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j")
    assert json.loads(delete.content) == {"propagationPolicy": "Background", "preconditions": {"uid": "job-uid"}}
    assert run(client.delete_owned(api.JOBS, "ns", "other", "mine")) is False
    assert seen.requests[-1].method == "GET"


def test_429_is_sent_again_after_retry_after_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(api.asyncio, "sleep", sleep)
    answers = [httpx.Response(429, headers={"Retry-After": "3"}, text="Too many requests, please try again later."),
               httpx.Response(429, text="Too many requests"), httpx.Response(200, json={"metadata": {"name": "r"}})]
    client, seen = connect(tmp_path, lambda request: answers.pop(0))
    assert run(client.create(api.RUNS, {"metadata": {"name": "r", "namespace": "ns"}}))["metadata"] == {"name": "r"}
    assert waits == [3.0, 1.0]
    assert [json.loads(r.content)["metadata"]["name"] for r in seen.requests] == ["r", "r", "r"]

    waits.clear()
    client, seen = connect(tmp_path, lambda request: httpx.Response(429, headers={"Retry-After": "120"}),
                           throttle_retries=2, max_retry_after=5.0)
    with pytest.raises(api.ApiError) as err:
        run(client.get(api.JOBS, "ns", "j"))
    assert err.value.status == 429
    assert (waits, len(seen.requests)) == ([5.0, 5.0], 3)


def test_retry_after_forms() -> None:
    assert api.retry_after("2", 10) == 2.0
    assert api.retry_after(None, 10) == 1.0
    assert api.retry_after("garbage", 10) == 1.0
    assert api.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 10) == 0.0  # in the past
    assert api.retry_after("3600", 10) == 10.0


def test_a_token_file_is_read_and_re_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    recorder = Recorder(lambda request: httpx.Response(200, json={}))
    client = api.Api.connect(api.Options(token_max_age=0.0), config(tmp_path, {"tokenFile": str(token)}),
                             inner=httpx.MockTransport(recorder))
    run(client.get(api.PODS, "ns", "p"))
    token.write_text("two\n")
    run(client.get(api.PODS, "ns", "p"))
    assert [r.headers["Authorization"] for r in recorder.requests] == ["Bearer one", "Bearer two"]
    assert run(api.connection_info(config(tmp_path, {"tokenFile": str(token)}))).token == "two"


def test_a_users_client_sends_that_token_and_nothing_of_the_operators(tmp_path: Path) -> None:
    """The console's client for a user: the operator's token file (or exec plugin) never replaces it."""
    operator_token = tmp_path / "token"
    operator_token.write_text("operator\n")
    recorder = Recorder(lambda request: httpx.Response(200, json={}))
    client = api.Api.for_token("users-token", config(tmp_path, {"tokenFile": str(operator_token)}),
                               api.Options(token_max_age=0.0), inner=httpx.MockTransport(recorder))
    run(client.get(api.PODS, "ns", "p"))
    run(client.create(api.SELF_SUBJECT_ACCESS_REVIEWS, {"spec": {}}))
    assert [r.headers["Authorization"] for r in recorder.requests] == ["Bearer users-token"] * 2
    assert recorder.requests[1].url.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def exec_user(tmp_path: Path, token: str) -> dict[str, Any]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("import json, os\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', "
                      "'kind': 'ExecCredential', 'status': {'token': os.environ['TOKEN'], "
                      "'expirationTimestamp': '2030-01-01T00:00:00Z'}}))\n")
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                     "args": [str(plugin)], "env": [{"name": "TOKEN", "value": token}]}}


def test_an_exec_plugin_logs_in_both_kopf_and_the_api_calls(tmp_path: Path) -> None:
    cfg = config(tmp_path, exec_user(tmp_path, "from-plugin"))
    info = run(api.connection_info(cfg))
    assert (info.server, info.token, info.default_namespace) == (SERVER, "from-plugin", "ns")
    assert info.expiration is not None and info.expiration.year == 2030
    recorder = Recorder(lambda request: httpx.Response(200, json={}))
    client = api.Api.connect(api.Options(), cfg, inner=httpx.MockTransport(recorder))
    run(client.get(api.PODS, "ns", "p"))
    assert recorder.requests[0].headers["Authorization"] == "Bearer from-plugin"


def test_client_certificates_go_to_kopf_as_absolute_paths(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"client-certificate": "admin.crt", "client-key": "/abs/admin.key"})
    info = run(api.connection_info(cfg))
    assert (info.certificate_path, info.private_key_path, info.token) == (str(tmp_path / "admin.crt"),
                                                                          "/abs/admin.key", None)


def test_no_credentials_at_all_is_a_login_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(kopf.LoginError, match="no Kubernetes credentials"):
        api.load_config()


def test_the_operator_process_never_imports_kubernetes() -> None:
    """kopf imports the kubernetes client (a large share of the process's memory) whenever it can, and the development
    environment has it (the bed and the tests use it): the entry point must keep it out, handlers and lightkube
    included, and kopf must then log in with our handler, not through that client. Nor httpx's command-line tool
    (click, rich, pygments: the development environment has them).
    A fresh interpreter, since this one has imported it."""
    code = ("import sys, kto_operator.__main__, kto_operator.main as m; m.load_handlers(); import kopf; "
            "from kopf._core.intents import causes; "  # kopf exposes no public list of registered handlers
            "logins = kopf.get_default_registry()._activities.get_handlers(causes.Activity.AUTHENTICATION); "
            "print(sorted(n for n, mod in sys.modules.items() if mod is not None "  # None: blocked, not loaded
            "and n.split('.')[0] in ('kubernetes', 'click', 'rich', 'pygments'))); "
            "print([f'{h.fn.__module__}.{h.fn.__name__}' for h in logins])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    modules, logins = out.stdout.strip().splitlines()
    assert modules == "[]", modules[:500]
    assert logins == "['kto_operator.connection.login']", logins


def test_the_power_half_alone_logs_in_with_the_same_handler() -> None:
    """`kopf run -m kto_operator.power.handlers`: the power half registers the one login by itself, and a cleanup
    that gives the Api back. A fresh interpreter: kopf's registry is process-wide."""
    code = ("import kopf, kto_operator.power.handlers; from kopf._core.intents import causes; "
            "reg = kopf.get_default_registry()._activities; "
            "print([f'{h.fn.__module__}.{h.fn.__name__}' for a in (causes.Activity.AUTHENTICATION, "
            "causes.Activity.CLEANUP) for h in reg.get_handlers(a)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "['kto_operator.connection.login', 'kto_operator.power.handlers.power_cleanup']", \
        out.stdout


def test_both_halves_share_one_api_closed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first startup handler makes the Api, the other one gets it; the last half to give it back closes it."""
    config(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    memo: dict[str, Any] = {}

    async def scenario() -> None:
        first = connection.shared(memo, api.Options(pool_size=4), "trainingruns")
        assert connection.shared(memo, api.Options(pool_size=4), "trainingruns") is first  # a retried startup
        assert connection.shared(memo, api.Options(pool_size=32), "power") is first
        closed: list[bool] = []
        close = first.close

        async def counted() -> None:
            closed.append(True)
            await close()

        first.close = counted  # type: ignore[method-assign]
        await connection.release(memo, "power")
        assert memo[connection.MEMO_KEY] is first and not closed  # the other half still uses it
        await connection.release(memo, "trainingruns")
        assert connection.MEMO_KEY not in memo and closed == [True]

    run(scenario())


def test_kopfs_session_carries_the_login_and_bounds_its_connections() -> None:
    from aiohttp import web

    async def scenario() -> tuple[int, set[str], kopf.AiohttpSession]:
        open_now, most, auth = 0, 0, set()

        async def slow(request: web.Request) -> web.Response:
            nonlocal open_now, most
            auth.add(request.headers.get("Authorization", ""))
            open_now += 1
            most = max(most, open_now)
            await asyncio.sleep(0.05)
            open_now -= 1
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/x", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        info = kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="tok", default_namespace="ns")
        ours = connection.kopf_session(info, limit=3)
        try:
            async def get() -> None:
                async with ours.aiohttp_session.get(f"{ours.server}/x") as answer:
                    assert answer.status == 200

            await asyncio.gather(*(get() for _ in range(12)))
        finally:
            await ours.aiohttp_session.close()
            await runner.cleanup()
        return most, auth, ours

    most, auth, ours = run(scenario())
    assert most == 3, most  # 12 concurrent requests, never more than 3 at once, and 3 indeed used
    assert auth == {"Bearer tok"}
    assert (ours.server.startswith("http://127.0.0.1:"), ours.default_namespace) == (True, "ns")


def test_kopfs_login_is_a_bounded_session_and_the_same_object_for_the_same_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["one", "one", "two"])

    async def info() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=SERVER, token=next(tokens))

    monkeypatch.setattr(api, "connection_info", info)

    async def scenario() -> tuple[list[kopf.AiohttpSession], int | None]:
        memo = kopf.Memo()
        logins = [await connection.login(memo=memo) for _ in range(3)]
        connector = logins[0].aiohttp_session.connector
        limit = connector.limit if connector is not None else None
        for login in {id(s): s for s in logins}.values():
            await login.aiohttp_session.close()
        return logins, limit

    (first, again, rotated), limit = run(scenario())
    assert isinstance(first, kopf.AiohttpSession) and limit == connection.KOPF_CONNECTIONS
    # kopf tells credentials it saw rejected by equality: the same token must give the same object back.
    assert again is first
    assert rotated is not first and rotated.aiohttp_session.headers["Authorization"] == "Bearer two"
