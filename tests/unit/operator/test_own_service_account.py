"""A TrainingRun never runs with the operator's rights: the operator finds its own ServiceAccount at start-up
(SelfSubjectReview, else its token's subject) and build_job refuses a trainer pod that would run as it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import pytest
from kto_operator import identity, jobs
from kto_operator.api import Api
from kto_operator.settings import OperatorSettings
from lightkube import KubeConfig

from tests.helpers import stub_server

IDS = jobs.MlflowIds(run_id="abc", experiment_id="1", tracking_uri="http://mlflow:5000")
SETTINGS = OperatorSettings(own_service_account=("team", "kto-operator"))


def run(namespace: str = "team", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": namespace, "uid": "u-1"},
            "spec": {"image": "kto-trainer:1", "experiment": "e", **spec}}


def test_the_operators_own_service_account_is_refused() -> None:
    with pytest.raises(jobs.InvalidSpec, match="operator's own: a TrainingRun never runs with the operator's rights"):
        jobs.build_job(run(serviceAccountName="kto-operator"), SETTINGS, IDS)


def test_whatever_its_name_and_also_as_the_default() -> None:
    renamed = dataclasses.replace(SETTINGS, own_service_account=("team", "ml-controller"))
    with pytest.raises(jobs.InvalidSpec):
        jobs.build_job(run(serviceAccountName="ml-controller"), renamed, IDS)
    as_default = dataclasses.replace(SETTINGS, default_service_account="kto-operator")
    with pytest.raises(jobs.InvalidSpec):
        jobs.build_job(run(), as_default, IDS)


def test_other_service_accounts_and_namespaces_are_fine() -> None:
    pod = jobs.build_job(run(serviceAccountName="trainer"), SETTINGS, IDS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer"
    # Another namespace's kto-operator is another ServiceAccount (an all-namespaces operator lives in one).
    pod = jobs.build_job(run("other", serviceAccountName="kto-operator"), SETTINGS, IDS)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kto-operator"
    pod = jobs.build_job(run(), SETTINGS, IDS)["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("username, expected", [
    ("system:serviceaccount:team:kto-operator", ("team", "kto-operator")),
    ("system:serviceaccount:team", None),
    ("system:serviceaccount::x", None),
    ("kubernetes-admin", None),
    ("system:serviceaccounts:team", None),
    (None, None),
])
def test_service_account_of(username: str | None, expected: tuple[str, str] | None) -> None:
    assert identity.service_account_of(username) == expected


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_token_subject() -> None:
    assert identity.token_subject(_jwt({"sub": "system:serviceaccount:a:b"})) == "system:serviceaccount:a:b"
    assert identity.token_subject("not-a-jwt") is None
    assert identity.token_subject("a.!!!.c") is None
    assert identity.token_subject(None) is None


def own(port: int, token: str | None) -> tuple[str, str] | None:
    kube = Api.connect(config=KubeConfig.from_server(f"http://127.0.0.1:{port}").get())
    return asyncio.run(identity.own_service_account(kube, token))


def test_own_service_account_from_the_api_server() -> None:
    with stub_server() as stub:
        stub.status = 201
        review = {"status": {"userInfo": {"username": "system:serviceaccount:team:kto-operator"}}}
        stub.body = json.dumps(review).encode()
        assert own(stub.port, None) == ("team", "kto-operator")
        ((method, path, _, body),) = stub.seen
    assert (method, path) == ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews")
    assert json.loads(body)["kind"] == "SelfSubjectReview"


def test_own_service_account_from_the_token_on_an_older_api_server() -> None:
    token = _jwt({"sub": "system:serviceaccount:team:kto-operator"})
    with stub_server() as stub:
        stub.status = 404
        stub.body = b'{"kind": "Status", "message": "the server could not find the requested resource"}'
        assert own(stub.port, token) == ("team", "kto-operator")
        assert own(stub.port, "opaque-token") is None


def test_a_user_is_no_service_account() -> None:
    with stub_server() as stub:
        stub.status = 201
        stub.body = b'{"status": {"userInfo": {"username": "alice"}}}'
        assert own(stub.port, None) is None
