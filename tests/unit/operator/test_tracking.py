"""Tracker's pure logic and its REST client without MLflow: the register rule, redaction, which tracking URIs
are refused, the Authorization header (as MLflow's client builds it), error mapping from a status and a body,
and what a tiny local HTTP server sees and answers. Tracker against the real MLflow server:
tests/integration/test_tracking_rest.py. And: the operator never imports mlflow."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
from kto_operator.aio_transport import AiohttpTransport
from kto_operator.mlflow_rest import ClientOptions, Credentials, Target, auth_header, error_for
from kto_operator.tracking import MlflowUnavailable, RegisterRule, Tracker, TrackingError, redact

from tests.helpers import Stub, free_port, stub_server

T = TypeVar("T")
UID = "0f0e0d0c-1111-2222-3333-444455556666"


def call(fn: Callable[[Tracker], Awaitable[T]], tracker: Tracker | None = None) -> T:
    """fn(tracker) on a fresh event loop, the tracker closed after it (its connections belong to that loop)."""
    used = tracker or Tracker()

    async def main() -> T:
        try:
            return await fn(used)
        finally:
            await used.close()

    return asyncio.run(main())


def test_the_operator_never_imports_mlflow() -> None:
    """mlflow's client doubled the operator's memory (~1,400 modules): everything the operator loads,
    handlers included, must do without it. A fresh interpreter, since this one may have imported it."""
    code = ("import sys, kto_operator.main as m; m.load_handlers(); "
            "print(sorted(n for n in sys.modules if n == 'mlflow' or n.startswith('mlflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout[:500]


@pytest.mark.parametrize(("greater", "value", "passes"), [(True, 0.9, True), (True, 0.89, False),
                                                          (False, 0.1, True), (False, 0.2, False)])
def test_register_rule(greater: bool, value: float, passes: bool) -> None:
    threshold = 0.9 if greater else 0.1
    rule = RegisterRule.from_spec({"name": "m", "metric": "x", "threshold": threshold, "greaterIsBetter": greater})
    assert rule is not None and rule.passes(value) is passes
    assert rule.artifact_path == "model"
    assert RegisterRule.from_spec(None) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("to https://bob:s3cret@mlflow.example.com/api failed", "to https://***@mlflow.example.com/api failed"),
    ("http://mlflow:5000/x", "http://mlflow:5000/x"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "sqlite:///tmp/mlflow.db", "databricks",
                                 "databricks://profile", "mlflow:5000", "http://", "http://host:port"])
def test_only_http_tracking_uris(uri: str) -> None:
    with pytest.raises(TrackingError):
        Target.parse(uri)


def test_a_store_uri_fails_every_call_with_a_clear_message() -> None:
    with pytest.raises(TrackingError, match=r"http:// or https:// only"):
        call(lambda t: t.experiment_id("sqlite:///tmp/mlflow.db", "x"))


def test_target_takes_the_login_out_of_the_uri() -> None:
    target = Target.parse("https://bob:s%40cret@mlflow.example.com/mlflow/")
    assert (target.host, target.port, target.prefix) == ("mlflow.example.com", 443, "/mlflow")
    assert (target.username, target.password) == ("bob", "s@cret")
    assert target.origin == "https://mlflow.example.com:443/mlflow"  # what messages show: no login
    assert Target.parse("http://mlflow:5000").port == 5000 and Target.parse("http://mlflow").port == 80


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("uri", "creds", "expected"), [
    ("http://m:5000", Credentials(), None),
    ("http://m:5000", Credentials(token="t0k"), "Bearer t0k"),
    ("http://m:5000", Credentials(username="u", password="p"), basic("u", "p")),
    # MLflow's client: a username and password win over a token; a username alone is not a login.
    ("http://m:5000", Credentials(username="u", password="p", token="t0k"), basic("u", "p")),
    ("http://m:5000", Credentials(username="u", token="t0k"), "Bearer t0k"),
    # requests (under MLflow's client) takes a login written in the URI over any header.
    ("http://bob:pw@m:5000", Credentials(username="u", password="p", token="t0k"), basic("bob", "pw")),
])
def test_auth_header_like_mlflows_client(uri: str, creds: Credentials, expected: str | None) -> None:
    assert auth_header(Target.parse(uri), creds) == expected


def test_credentials_from_the_environment() -> None:
    env = {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p", "MLFLOW_TRACKING_TOKEN": "t",
           "MLFLOW_TRACKING_INSECURE_TLS": "True", "MLFLOW_TRACKING_CLIENT_CERT_PATH": "/c.pem"}
    assert Credentials.from_env(env) == Credentials("u", "p", "t", insecure_tls=True, client_cert_path="/c.pem")
    assert Credentials.from_env({"MLFLOW_TRACKING_SERVER_CERT_PATH": "/ca.pem"}).server_cert_path == "/ca.pem"
    assert Credentials.from_env({}) == Credentials()
    with pytest.raises(TrackingError, match="INSECURE_TLS"):
        Credentials.from_env({"MLFLOW_TRACKING_INSECURE_TLS": "maybe"})
    with pytest.raises(TrackingError, match="both set"):
        Credentials.from_env({"MLFLOW_TRACKING_INSECURE_TLS": "1", "MLFLOW_TRACKING_SERVER_CERT_PATH": "/ca.pem"})


def mlflow_error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_errors_and_throttling_are_unavailable(status: int) -> None:
    error = error_for(status, mlflow_error("INTERNAL_ERROR", "database is locked"), "create run")
    assert isinstance(error, MlflowUnavailable)
    assert str(error) == "create run: INTERNAL_ERROR: database is locked"


def test_a_refusal_keeps_mlflows_error_code_and_message() -> None:
    error = error_for(400, mlflow_error("INVALID_PARAMETER_VALUE", "Changing param values is not allowed"),
                      "log params")
    assert isinstance(error, TrackingError) and error.error_code == "INVALID_PARAMETER_VALUE"
    assert str(error) == "log params: INVALID_PARAMETER_VALUE: Changing param values is not allowed"
    missing = error_for(404, mlflow_error("RESOURCE_DOES_NOT_EXIST", "no such run"), "read run")
    assert isinstance(missing, TrackingError) and missing.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_a_refusal_that_is_not_mlflows_json() -> None:
    error = error_for(401, b"You are not authenticated. Please see https://u:pw@x/login", "read run")
    assert isinstance(error, TrackingError) and error.error_code is None
    assert str(error) == "read run: HTTP 401: You are not authenticated. Please see https://***@x/login"
    assert str(error_for(403, b"", "read run")) == "read run: HTTP 403: Forbidden"
    assert isinstance(error_for(503, b"<html>bad gateway</html>", "x"), MlflowUnavailable)


@pytest.mark.parametrize("retries", [0, 2])
def test_nothing_listening_is_unavailable_after_the_connect_retries(retries: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []
    send = AiohttpTransport._send

    async def counted(self: AiohttpTransport, request: httpx.Request) -> httpx.Response:
        attempts.append(str(request.url))
        return await send(self, request)

    monkeypatch.setattr(AiohttpTransport, "_send", counted)
    options = ClientOptions(connect_timeout=2, read_timeout=2, connect_retries=retries)
    with pytest.raises(MlflowUnavailable, match="unreachable") as caught:
        call(lambda t: t.experiment_id(f"http://u:secret@127.0.0.1:{free_port()}", "x"), Tracker(options))
    assert "secret" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert len(attempts) == 1 + retries


def test_requests_carry_the_environments_login_read_when_the_client_is_made(
        stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker()  # no environment read yet: a token set after this is still used
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0k")
    stub.body = json.dumps({"run": {"info": {"run_id": "r1", "status": "RUNNING"}}}).encode()
    assert call(lambda t: t.metrics(f"http://127.0.0.1:{stub.port}/prefix/", "r1"), tracker) == {}
    method, path, headers, _ = stub.seen[-1]
    assert (method, path) == ("GET", "/prefix/api/2.0/mlflow/runs/get?run_id=r1")
    assert headers["Authorization"] == "Bearer t0k" and headers["User-Agent"] == "kto-operator"


def test_the_environments_login_goes_only_to_the_operators_own_server(
        stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TrainingRun names its tracking URI: another server than the operator's must not get the operator's
    login (an author could point it at a server of theirs to read it)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "operator")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    stub.body = json.dumps({"run": {"info": {"run_id": "r1", "status": "RUNNING"}}}).encode()
    own = f"http://127.0.0.1:{stub.port}"
    for home, sent in ((own + "/some/prefix", basic("operator", "s3cret")), (f"http://127.0.0.1:{free_port()}", None),
                       (f"https://127.0.0.1:{stub.port}", None), (f"http://LOCALHOST.invalid:{stub.port}", None)):
        call(lambda t: t.metrics(own, "r1"), Tracker(ClientOptions(credentials_for=home)))
        assert stub.seen[-1][2].get("Authorization") == sent, home
    # A login written into the run's own URI is that URI's to send.
    call(lambda t: t.metrics(f"http://bob:pw@127.0.0.1:{stub.port}", "r1"),
         Tracker(ClientOptions(credentials_for=f"http://127.0.0.1:{free_port()}")))
    assert stub.seen[-1][2]["Authorization"] == basic("bob", "pw")


def test_a_login_in_the_uri_is_sent_and_never_shown(stub: Stub) -> None:
    uri = f"http://bob:s3cret@127.0.0.1:{stub.port}"
    stub.status, stub.body = 503, b"upstream down (bob:s3cret)"
    with pytest.raises(MlflowUnavailable) as caught:
        call(lambda t: t.metrics(uri, "r1"))
    assert stub.seen[-1][2]["Authorization"] == basic("bob", "s3cret")
    assert "HTTP 503" in str(caught.value)
    stub.status = 302
    stub.headers = {"Location": f"https://127.0.0.1:{stub.port}/"}
    with pytest.raises(TrackingError, match="redirects to https://") as redirected:
        call(lambda t: t.metrics(uri, "r1"))
    assert "s3cret" not in str(redirected.value)


def test_an_answer_that_is_not_mlflows_api_is_a_tracking_error(stub: Stub) -> None:
    stub.body = b"<html>login</html>"
    with pytest.raises(TrackingError, match="other than MLflow's JSON API"):
        call(lambda t: t.metrics(f"http://127.0.0.1:{stub.port}", "r1"))


def test_a_server_error_is_not_retried_inside_the_call(stub: Stub) -> None:
    # The handlers retry with backoff; a retry here would hold a handler slot and could repeat a create.
    stub.status, stub.body = 500, mlflow_error("INTERNAL_ERROR", "boom")
    with pytest.raises(MlflowUnavailable, match="INTERNAL_ERROR: boom"):
        call(lambda t: t.ensure_run(f"http://127.0.0.1:{stub.port}", "e", UID, "r", {}))
    assert len(stub.seen) == 1


def test_a_refusal_over_the_wire_keeps_mlflows_error_code(stub: Stub) -> None:
    stub.status, stub.body = 400, mlflow_error("INVALID_PARAMETER_VALUE", "bad run id")
    with pytest.raises(TrackingError, match="INVALID_PARAMETER_VALUE: bad run id") as caught:
        call(lambda t: t.set_tag(f"http://127.0.0.1:{stub.port}", "r1", "k", "v"))
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    method, path, headers, body = stub.seen[-1]
    assert (method, path) == ("POST", "/api/2.0/mlflow/runs/set-tag")
    assert json.loads(body) == {"run_id": "r1", "key": "k", "value": "v"}
    assert headers["Content-Type"] == "application/json"


def test_the_close_logs_the_params_the_trainer_did_not_in_batches_of_a_hundred(stub: Stub) -> None:
    params = {f"p{i:03d}": str(i) for i in range(251)}
    stub.body = json.dumps({"run": {"info": {"run_id": "r1", "status": "RUNNING"},
                                    "data": {"params": [{"key": "p000", "value": "0.0"}]}}}).encode()
    closed = call(lambda t: t.terminate(f"http://127.0.0.1:{stub.port}", "r1", "FINISHED", params=params))
    assert closed.status_set and not closed.params_refused
    paths = [path.split("?")[0] for _, path, _, _ in stub.seen]
    assert paths == ["/api/2.0/mlflow/runs/get"] + ["/api/2.0/mlflow/runs/log-batch"] * 3 + \
        ["/api/2.0/mlflow/runs/update"]
    batches = [json.loads(body)["params"] for _, path, _, body in stub.seen if path.endswith("log-batch")]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert {p["key"]: p["value"] for b in batches for p in b} == {k: v for k, v in params.items() if k != "p000"}


def test_epochs_done_counts_the_steps_of_the_epoch_metric(stub: Stub) -> None:
    stub.body = json.dumps({"metrics": [{"step": 0}, {"step": 1}, {"step": 1}, {}]}).encode()
    done = call(lambda t: t.epochs_done(f"http://127.0.0.1:{stub.port}", "r1", {"loss": 0.5, "epoch": 1.0}))
    assert done == 2
    assert "metric_key=epoch" in stub.seen[-1][1]
    assert call(lambda t: t.epochs_done(f"http://127.0.0.1:{stub.port}", "r1", {})) == 0


def test_concurrent_calls_share_one_pooled_client() -> None:
    """A burst of calls to one server waits for the pool's connections instead of opening one per call."""
    with stub_server(keep_alive=True) as stub:
        stub.body = json.dumps({"run": {"info": {"run_id": "r1", "status": "RUNNING"}}}).encode()
        uri = f"http://127.0.0.1:{stub.port}"

        async def burst(tracker: Tracker) -> bool:
            first = tracker.client(uri)
            await asyncio.gather(*(tracker.metrics(uri, f"r{i}") for i in range(12)))
            return tracker.client(uri) is first

        assert call(burst, Tracker(ClientOptions(pool_size=2)))
        assert len(stub.seen) == 12 and len(set(stub.peers)) <= 2


def test_a_closed_tracker_opens_a_new_client_when_called_again(stub: Stub) -> None:
    tracker = Tracker()
    uri = f"http://127.0.0.1:{stub.port}"
    stub.body = json.dumps({"run": {"info": {"run_id": "r1", "status": "RUNNING"}}}).encode()
    assert call(lambda t: t.metrics(uri, "r1"), tracker) == {}
    assert call(lambda t: t.metrics(uri, "r1"), tracker) == {}  # on another event loop, after close
