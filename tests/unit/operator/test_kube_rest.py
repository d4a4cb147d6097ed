"""kube_rest without a cluster: paths and query strings, Status messages, the Authorization header from kopf's
ConnectionInfo, the kubeconfig login (tokenFile included), and what a tiny local HTTP server sees and answers.
Against a real API server: every integration test (the operator uses nothing else). And: the operator's
process never imports the `kubernetes` client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kopf
import pytest
import yaml
from kto_operator import kube_rest
from kto_operator.kube_rest import ApiError, Client, Login, Resource, auth_header, status_message, url

from tests.helpers import Stub


def test_the_operator_process_never_imports_kubernetes() -> None:
    """kopf imports the kubernetes client (~1,200 modules, ~50 MB) whenever it can: the entry point must keep it
    out, handlers included, and kopf must then log in with our handler, not through that client.
    A fresh interpreter, since this one has imported it (the tests use it)."""
    code = ("import sys, kto_operator.__main__, kto_operator.main as m; m.load_handlers(); import kopf; "
            "from kopf._core.intents import causes; "  # kopf exposes no public list of registered handlers
            "logins = kopf.get_default_registry()._activities.get_handlers(causes.Activity.AUTHENTICATION); "
            "print(sorted(n for n, mod in sys.modules.items() if mod is not None "  # None: blocked, not loaded
            "and (n == 'kubernetes' or n.startswith('kubernetes.')))); "
            "print([f'{h.fn.__module__}.{h.fn.__name__}' for h in logins])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    modules, logins = out.stdout.strip().splitlines()
    assert modules == "[]", modules[:500]
    assert logins == "['kto_operator.handlers.login']", logins


@pytest.mark.parametrize(("resource", "args", "expected"), [
    (Resource("", "v1", "pods"), ("ns",), "/api/v1/namespaces/ns/pods"),
    (Resource("batch", "v1", "jobs"), ("ns", "j-1"), "/apis/batch/v1/namespaces/ns/jobs/j-1"),
    (Resource("kto.dev", "v1alpha1", "trainingruns"), ("ns", "r", "status"),
     "/apis/kto.dev/v1alpha1/namespaces/ns/trainingruns/r/status"),
    (Resource("apps", "v1", "deployments"), ("n s", "a/b"), "/apis/apps/v1/namespaces/n%20s/deployments/a%2Fb"),
])
def test_resource_paths(resource: Resource, args: tuple[str, ...], expected: str) -> None:
    assert resource.path(*args) == expected


def test_query_parameters_are_in_the_url() -> None:
    assert url("/api/v1/namespaces/ns/pods") == "/api/v1/namespaces/ns/pods"
    assert url("/p", {"labelSelector": "kto.dev/trainingrun-uid=u-1,a!=b"}) == \
        "/p?labelSelector=kto.dev%2Ftrainingrun-uid%3Du-1%2Ca%21%3Db"


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                       "reason": reason, "code": code}).encode()


def test_api_error_carries_the_status_message_on_one_line() -> None:
    err = ApiError(422, "Unprocessable Entity", status(422, "Invalid", 'Job.batch "x" is invalid: bad image'))
    assert (err.status, err.message) == (422, 'Job.batch "x" is invalid: bad image')
    assert str(err) == '422 Unprocessable Entity: Job.batch "x" is invalid: bad image'
    assert ApiError(503, "Service Unavailable", b"").message == "Service Unavailable"
    assert status_message(b"<html>\n proxy error </html>\n") == "<html>\n proxy error </html>"
    assert status_message(b"[1, 2]") == "[1, 2]"


@pytest.mark.parametrize(("info", "expected"), [
    (kopf.ConnectionInfo(server="https://k", token="t0k"), "Bearer t0k"),
    (kopf.ConnectionInfo(server="https://k", scheme="Bearer", token="t0k"), "Bearer t0k"),
    (kopf.ConnectionInfo(server="https://k", username="bob", password="pw"), "Basic Ym9iOnB3"),
    (kopf.ConnectionInfo(server="https://k"), None),
])
def test_auth_header_as_kopf_sends_it(info: kopf.ConnectionInfo, expected: str | None) -> None:
    assert auth_header(info) == expected


def write_kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


@pytest.fixture
def no_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_rest.kopf, "login_with_service_account", lambda **_: None)


def test_kubeconfig_login_reads_a_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             no_service_account: None) -> None:
    """kopf's kubeconfig login ignores `tokenFile` (the bed's pods have one): read here, and remembered."""
    token = tmp_path / "token"
    token.write_text("t0k\n")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path, {"tokenFile": str(token)})))
    login = kube_rest.login()
    assert (login.info.server, login.info.token, login.token_path) == ("https://127.0.0.1:6443", "t0k", str(token))


def test_kubeconfig_login_with_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       no_service_account: None) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path, {"token": "abc"})))
    login = kube_rest.login()
    assert (login.info.token, login.token_path) == ("abc", None)


def test_no_login_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_service_account: None) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError):
        kube_rest.login()




def test_a_request_as_the_api_server_sees_it(stub: Stub) -> None:
    client = Client(Login(kopf.ConnectionInfo(server=f"http://127.0.0.1:{stub.port}/prefix", token="t0k")))
    stub.body = b'{"kind": "Deployment"}'
    answer = client.request("PATCH", "/apis/apps/v1/namespaces/ns/deployments/web", body={"spec": {"replicas": 0}},
                            params={"fieldManager": "kto"}, content_type=kube_rest.MERGE_PATCH)
    assert answer == {"kind": "Deployment"}
    method, path, headers, body = stub.seen[-1]
    assert (method, path) == ("PATCH", "/prefix/apis/apps/v1/namespaces/ns/deployments/web?fieldManager=kto")
    assert headers["Content-Type"] == "application/merge-patch+json" and json.loads(body) == {"spec": {"replicas": 0}}
    assert headers["Authorization"] == "Bearer t0k" and headers["Accept"] == "application/json"
    stub.body = b""
    assert client.request("DELETE", "/x") == {}


def test_an_error_answer_is_an_api_error_and_not_retried(stub: Stub) -> None:
    client = Client(Login(kopf.ConnectionInfo(server=f"http://127.0.0.1:{stub.port}")))
    stub.status, stub.body = 409, status(409, "Conflict", "the object has been modified")
    with pytest.raises(ApiError) as caught:
        client.request("POST", "/apis/batch/v1/namespaces/ns/jobs", body={"metadata": {"name": "j"}})
    assert (caught.value.status, caught.value.message) == (409, "the object has been modified")
    assert len(stub.seen) == 1 and "Authorization" not in stub.seen[-1][2]


def test_a_rotated_token_is_read_again(stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    client = Client(Login(kopf.ConnectionInfo(server=f"http://127.0.0.1:{stub.port}", token="first"), str(token)))
    token.write_text("second")
    client.request("GET", "/x")
    assert stub.seen[-1][2]["Authorization"] == "Bearer first"  # young: not read again on every request
    monkeypatch.setattr(kube_rest, "TOKEN_MAX_AGE", 0.0)
    client.request("GET", "/x")
    assert stub.seen[-1][2]["Authorization"] == "Bearer second"
    token.unlink()  # being rewritten: the last token is kept
    client.request("GET", "/x")
    assert stub.seen[-1][2]["Authorization"] == "Bearer second"
