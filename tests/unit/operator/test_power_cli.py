"""`python -m kto_operator.power` (power.cli.Switch) against an in-memory REST stand-in, an httpx.MockTransport
under kto_operator.api, that answers the requests it sends (list, get, create, merge patch with resourceVersion
conflicts) and records them. The real API server, RBAC and the CronJobs are exercised in
tests/integration/test_sandbox.py."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kto_operator import naming
from kto_operator.api import Api
from kto_operator.power import cli, switch
from kto_operator.power.schedule import OFF, ON
from lightkube import KubeConfig

REPO = Path(__file__).resolve().parents[3]
NS = "sandbox"
T0 = datetime(2026, 6, 10, 19, 0, tzinfo=UTC)
PATH = re.compile(r"^/apis?/(?:(?P<group>[a-z.]+)/)?v1/namespaces/(?P<ns>[^/]+)/(?P<plural>[a-z]+)"
                  r"(?:/(?P<name>[^/]+))?$")
PART_OF = {"app.kubernetes.io/part-of": "kto-mlflow"}


def merge(o: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(o)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge(out.get(k) or {}, v)
        else:
            out[k] = v
    return out


class FakeApi:
    """Objects by (plural, name). Scaled workloads become Ready when `settle()` runs (the switch's sleep)."""

    def __init__(self) -> None:
        self.objs: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 0
        self.calls: list[tuple[str, str, str]] = []  # (verb, group, plural)
        self.conflicts: set[tuple[str, str]] = set()  # the next patch of these answers 409 once
        self.auto_settle = True

    def add(self, plural: str, name: str, labels: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        o = {"metadata": {"name": name, "namespace": NS, "generation": 1, "labels": labels or {},
                          "annotations": {}}, **body}
        self.rv += 1
        o["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[(plural, name)] = o
        return o

    def settle(self, _seconds: float = 0.0) -> None:
        for (plural, _), o in self.objs.items():
            if plural in ("deployments", "statefulsets") and self.auto_settle:
                n = o["spec"].get("replicas", 1)
                o["status"] = {"observedGeneration": o["metadata"]["generation"], "replicas": n, "readyReplicas": n}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        code, answer = self.answer(request.method, request.url.path, body, request.headers.get("Content-Type", ""))
        return httpx.Response(code, json=answer)

    def answer(self, method: str, path: str, body: dict[str, Any] | None,
               content_type: str) -> tuple[int, dict[str, Any]]:
        m = PATH.match(path)
        assert m and m["ns"] == NS, path
        plural, name = m["plural"], m["name"]
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch"}[method]
        self.calls.append((verb, m["group"] or "", plural))
        if verb == "list":
            return 200, {"metadata": {}, "items": [o for (p, _), o in sorted(self.objs.items()) if p == plural]}
        if verb == "create":
            assert body is not None and body["metadata"]["namespace"] == NS
            if (plural, body["metadata"]["name"]) in self.objs:
                return status(409, "already exists")
            skip = ("metadata", "apiVersion", "kind")
            return 201, self.add(plural, body["metadata"]["name"], **{k: v for k, v in body.items() if k not in skip})
        current = self.objs.get((plural, name or ""))
        if current is None:
            return status(404, "not found")
        if verb == "get":
            return 200, current
        assert body is not None and content_type == "application/merge-patch+json"
        want_rv = (body.get("metadata") or {}).get("resourceVersion")
        if (plural, name) in self.conflicts or (want_rv and want_rv != current["metadata"]["resourceVersion"]):
            self.conflicts.discard((plural, name or ""))
            self.rv += 1
            current["metadata"]["resourceVersion"] = str(self.rv)  # someone else wrote meanwhile
            return status(409, "the object has been modified")
        new = merge(current, {k: v for k, v in body.items() if k != "metadata"} |
                    {"metadata": {k: v for k, v in (body.get("metadata") or {}).items() if k != "resourceVersion"}})
        if "spec" in body:
            new["metadata"]["generation"] += 1
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[(plural, name or "")] = new
        return 200, new

    def replicas(self, plural: str, name: str) -> int:
        return int(self.objs[(plural, name)]["spec"]["replicas"])


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.add("deployments", "mlflow", PART_OF, spec={"replicas": 2})
    fake.add("deployments", "notebook", {"app": "mine"}, spec={"replicas": 1})
    fake.add("deployments", "kto-operator", {**PART_OF, "app.kubernetes.io/name": "kto-operator"},
             spec={"replicas": 1})
    fake.add("statefulsets", "mysql", PART_OF, spec={"replicas": 1})
    fake.add("cronjobs", "backup", PART_OF, spec={"suspend": False})
    fake.add("cronjobs", "kto-power-on", {**PART_OF, "app.kubernetes.io/name": "kto-power"}, spec={"suspend": False})
    fake.settle()
    return fake


def status(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}


def switch_of(fake: FakeApi, args: Any, sleep: Callable[[float], None], out: Callable[[str], None]) -> cli.Switch:
    async def wait(seconds: float) -> None:
        sleep(seconds)

    kube = Api.connect(config=KubeConfig.from_server("http://k8s.test").get(), inner=httpx.MockTransport(fake))
    return cli.Switch(kube, cli.options(args, NS, {}), now=lambda: T0, sleep=wait, out=out)


def run(api: FakeApi, *argv: str) -> tuple[int, list[str]]:
    args = cli.parse_args(["--namespace", NS, *argv])
    lines: list[str] = []
    sw = switch_of(api, args, api.settle, lines.append)
    code = asyncio.run(sw.off() if args.state == "off" else sw.on())
    return code, lines


def record(api: FakeApi) -> switch.Record:
    return switch.Record.from_data(api.objs[("configmaps", "kto-power")]["data"])


SELECT = "--selector=app.kubernetes.io/part-of=kto-mlflow"


def test_off_then_on_restores_exact_counts_and_keeps_a_record(api: FakeApi) -> None:
    code, lines = run(api, "--state=off", SELECT)
    assert code == 0, lines
    assert (api.replicas("deployments", "mlflow"), api.replicas("statefulsets", "mysql")) == (0, 0)
    assert api.objs[("cronjobs", "backup")]["spec"]["suspend"] is True
    # Not selected, the operator, the command's own CronJob: untouched.
    assert api.replicas("deployments", "notebook") == 1 and api.replicas("deployments", "kto-operator") == 1
    assert api.objs[("cronjobs", "kto-power-on")]["spec"]["suspend"] is False
    rec = record(api)
    assert rec.state == OFF and rec.last_transition == "2026-06-10T19:00:00Z"
    assert {(w["kind"], w["name"]) for w in rec.workloads} == \
        {("Deployment", "mlflow"), ("StatefulSet", "mysql"), ("CronJob", "backup")}
    assert rec.awake == {"Deployment/mlflow": 2, "StatefulSet/mysql": 1}
    assert api.objs[("deployments", "mlflow")]["metadata"]["annotations"][naming.ANNOTATION_SLEPT_BY] == "kto-power"

    code, lines = run(api, "--state=on", SELECT)
    assert code == 0, lines
    assert (api.replicas("deployments", "mlflow"), api.replicas("statefulsets", "mysql")) == (2, 1)
    assert api.objs[("cronjobs", "backup")]["spec"]["suspend"] is False
    assert not any(k.startswith("kto.dev/") for k in api.objs[("deployments", "mlflow")]["metadata"]["annotations"])
    rec = record(api)
    assert (rec.state, rec.reason, rec.workloads) == (ON, switch.SWITCHED, ())


def test_a_second_off_changes_nothing(api: FakeApi) -> None:
    run(api, "--state=off", SELECT)
    before = copy.deepcopy({k: v for k, v in api.objs.items() if k[0] != "configmaps"})
    code, _ = run(api, "--state=off", SELECT)
    assert code == 0 and {k: v for k, v in api.objs.items() if k[0] != "configmaps"} == before
    assert record(api).awake == {"Deployment/mlflow": 2, "StatefulSet/mysql": 1}


def test_off_defers_under_a_running_training_unless_forced(api: FakeApi) -> None:
    api.add("jobs", "cats-dogs-other-1", {"app.kubernetes.io/component": "trainer"}, spec={}, status={})
    code, _ = run(api, "--state=off", SELECT)
    assert code == switch.EXIT_DEFERRED
    assert api.replicas("deployments", "mlflow") == 2
    rec = record(api)
    assert rec.reason == switch.SLEEP_DEFERRED and "cats-dogs-other-1" in rec.message
    code, _ = run(api, "--state=off", SELECT, "--force")
    assert code == 0 and api.replicas("deployments", "mlflow") == 0


def test_off_sleeps_once_the_training_ends_within_the_wait(api: FakeApi) -> None:
    job = api.add("jobs", "train", {"app.kubernetes.io/component": "trainer"}, spec={}, status={})
    polls = []

    def training_ends(seconds: float) -> None:
        polls.append(seconds)
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    args = cli.parse_args(["--namespace", NS, "--state=off", SELECT, "--wait-for-training=60"])
    sw = switch_of(api, args, training_ends, lambda _: None)
    assert asyncio.run(sw.off()) == 0 and polls and api.replicas("deployments", "mlflow") == 0


def test_a_human_edit_while_asleep_is_kept(api: FakeApi) -> None:
    run(api, "--state=off", SELECT)
    api.objs[("deployments", "mlflow")]["spec"]["replicas"] = 5  # scaled by hand while asleep
    code, lines = run(api, "--state=on", SELECT)
    assert code == 0 and api.replicas("deployments", "mlflow") == 5
    assert any("by hand" in line for line in lines)


def test_idled_workloads_are_reported_and_revived_on_request(api: FakeApi) -> None:
    run(api, "--state=off", SELECT)
    run(api, "--state=on", SELECT)
    api.objs[("deployments", "mlflow")]["spec"]["replicas"] = 0  # the Sandbox idler, 12 h later
    run(api, "--state=off", SELECT)  # nothing of mlflow to save: it is at 0 already
    code, _ = run(api, "--state=on", SELECT)
    assert code == 0 and api.replicas("deployments", "mlflow") == 0
    assert "Deployment/mlflow" in record(api).message
    assert record(api).awake["Deployment/mlflow"] == 2  # remembered through the sleep
    code, _ = run(api, "--state=on", SELECT, "--revive")
    assert code == 0 and api.replicas("deployments", "mlflow") == 2
    assert record(api).message == "awake"


def test_conflicts_are_retried_with_a_fresh_read(api: FakeApi) -> None:
    api.conflicts.add(("deployments", "mlflow"))
    code, _ = run(api, "--state=off", SELECT)
    assert code == 0 and api.replicas("deployments", "mlflow") == 0
    assert record(api).awake["Deployment/mlflow"] == 2
    assert ("get", "apps", "deployments") in api.calls  # the re-read after the 409


def test_a_wake_goes_on_past_a_group_that_is_not_ready(api: FakeApi) -> None:
    run(api, "--state=off", SELECT)
    api.auto_settle = False
    code, _ = run(api, "--state=on", SELECT, "--ready-timeout=0")
    assert code == 0
    rec = record(api)
    assert rec.state == ON and rec.reason == switch.WAKE_TIMEOUT and "StatefulSet/mysql" in rec.message
    assert api.replicas("deployments", "mlflow") == 2  # the next group was restored anyway


def test_calls_are_exactly_the_sandbox_roles_rights_and_nothing_of_kto_dev(api: FakeApi) -> None:
    """Every call over the scenarios above (conflict re-reads included) against manifests/sandbox/power's Role."""
    api.conflicts |= {("deployments", "mlflow"), ("statefulsets", "mysql"), ("cronjobs", "backup")}
    api.add("jobs", "train", {"app.kubernetes.io/component": "trainer"}, spec={}, status={})
    run(api, "--state=off", SELECT)
    run(api, "--state=off", SELECT, "--force")
    run(api, "--state=on", SELECT, "--revive")
    used = {(group, plural, verb) for verb, group, plural in api.calls}
    assert not any(group == "kto.dev" for group, _, _ in used)
    role = yaml.safe_load((REPO / "manifests/sandbox/power/role.yaml").read_text())
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert used == granted


def test_command_line_errors() -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--state=maybe"])
    args = cli.parse_args(["--state=on", "--selector=a in (b"])
    with pytest.raises(switch.SelectorError):
        cli.options(args, NS, {})
    opts = cli.options(cli.parse_args(["--state=off", "--exclude=x=y", "--wait-for-training=30"]), NS,
                       {"KTO_OPERATOR_DEPLOYMENT": "my-operator"})
    assert opts.wait_for_training == 30 and opts.selection.operator_deployment == "my-operator"
    assert {"matchLabels": {"x": "y"}} in opts.selection.exclude
