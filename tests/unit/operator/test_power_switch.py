"""The pure part of the CRD-less ON/OFF switch (kto_operator.power.switch): selectors, what is managed,
running trainings, the ConfigMap record, replica counts to revive."""

from __future__ import annotations

from typing import Any

import pytest
from kto_operator import naming
from kto_operator.power import switch, workloads
from kto_operator.power.switch import Record, SelectorError
from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, STATEFULSET


def obj(name: str, replicas: int | None = 1, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "resourceVersion": "7", "labels": labels or {},
                                         "annotations": annotations or {}}, "spec": {}, **extra}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def slept(name: str, saved: int) -> dict[str, Any]:
    return obj(name, 0, annotations={naming.ANNOTATION_SAVED_REPLICAS: str(saved), naming.ANNOTATION_SET_REPLICAS: "0"})


@pytest.mark.parametrize(("text", "selector"), [
    ("", None),
    ("app=web", {"matchLabels": {"app": "web"}}),
    ("app==web, tier=db", {"matchLabels": {"app": "web", "tier": "db"}}),
    ("app.kubernetes.io/part-of=kto-mlflow", {"matchLabels": {"app.kubernetes.io/part-of": "kto-mlflow"}}),
    ("app!=web", {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
    ("env in (dev, test),app", {"matchExpressions": [
        {"key": "env", "operator": "In", "values": ["dev", "test"]}, {"key": "app", "operator": "Exists"}]}),
    ("env notin (prod),!legacy", {"matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["prod"]}, {"key": "legacy", "operator": "DoesNotExist"}]}),
    ("a=", {"matchLabels": {"a": ""}}),
])
def test_parse_selector(text: str, selector: dict[str, Any] | None) -> None:
    assert switch.parse_selector(text) == selector


@pytest.mark.parametrize("text", ["a in (b,c", "a)", "a=b,,c=d", "-bad=x", "a=b c", "a=" + "x" * 64, "a in ()x"])
def test_parse_selector_refuses(text: str) -> None:
    with pytest.raises(SelectorError):
        switch.parse_selector(text)


def test_selection_never_takes_its_own_cronjobs_the_operator_or_opted_out_workloads() -> None:
    sel = switch.selection("app.kubernetes.io/part-of=kto-mlflow", ["keep=yes"])
    part = {"app.kubernetes.io/part-of": "kto-mlflow"}
    objs = [
        obj("mlflow", labels=part),
        obj("kto-power-off", None, labels={**part, "app.kubernetes.io/name": "kto-power"}),
        obj("other", labels={"app": "other"}),
        obj("kept", labels={**part, "keep": "yes"}),
        obj("dailyclean-off", labels={**part, "axa.com/dailyclean": "false"}),
    ]
    assert [o["metadata"]["name"] for o in workloads.managed(CRONJOB, objs, sel)] == ["mlflow"]
    operator = obj("kto-operator", labels={**part, "app.kubernetes.io/name": "kto-operator"})
    assert workloads.managed(DEPLOYMENT, [operator], sel) == []
    # Without a selector: everything except the command's own.
    assert [o["metadata"]["name"] for o in workloads.managed(CRONJOB, objs, switch.selection())] == \
        ["mlflow", "other", "kept"]


def job(name: str, labels: dict[str, str] | None = None, conditions: list[dict[str, str]] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app.kubernetes.io/component": "trainer"} if labels is None
                         else labels}, "spec": spec, "status": {"conditions": conditions or []}}


def test_active_trainers() -> None:
    jobs = [
        job("running"),
        job("done", conditions=[{"type": "Complete", "status": "True"}]),
        job("failed", conditions=[{"type": "Failed", "status": "True"}]),
        job("failing-soon", conditions=[{"type": "FailureTarget", "status": "True"}]),
        job("suspended", suspend=True),
        job("not-a-trainer", labels={"app": "x"}),
        {**job("deleting"), "metadata": {"name": "deleting", "deletionTimestamp": "2026-01-01T00:00:00Z",
                                         "labels": {"app.kubernetes.io/component": "trainer"}}},
    ]
    assert switch.active_trainers(jobs) == ["failing-soon", "running"]


def test_record_round_trips_through_configmap_strings() -> None:
    record = Record("Off", "Switched", "asleep", "2026-06-10T19:00:00Z",
                    ({"kind": "Deployment", "name": "mlflow", "savedReplicas": 2},), {"Deployment/mlflow": 2})
    data = record.to_data()
    assert all(isinstance(v, str) for v in data.values())
    assert Record.from_data(data) == record
    cm = switch.configmap("kto-power", record)
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/name": "kto-power"} and cm["data"] == data


def test_record_from_garbage_is_empty_not_an_error() -> None:
    assert Record.from_data(None) == Record()
    bad = Record.from_data({"state": "On", "workloads": "not json", "awake": '["a list"]'})
    assert bad.state == "On" and bad.workloads == () and bad.awake == {}
    assert Record.from_data({"awake": '{"Deployment/a": 2, "Deployment/b": "x"}'}).awake == {"Deployment/a": 2}


def test_awake_counts_prefer_saved_values_and_keep_idled_ones() -> None:
    by_kind = {
        DEPLOYMENT: [slept("mlflow", 2), obj("minio", 1), obj("idled", 0), obj("new-at-zero", 0)],
        STATEFULSET: [obj("mysql", 1)],
        CRONJOB: [obj("nightly", None)],
    }
    previous = {"Deployment/idled": 3, "Deployment/mlflow": 1, "Deployment/gone": 4}
    assert switch.awake_counts(by_kind, previous) == {
        "Deployment/mlflow": 2, "Deployment/minio": 1, "Deployment/idled": 3, "StatefulSet/mysql": 1}


def test_idled_and_revive() -> None:
    awake = {"Deployment/mlflow": 2, "Deployment/minio": 1}
    idle, ours, deliberate = obj("mlflow", 0), slept("minio", 1), obj("other", 0)
    assert switch.idled(DEPLOYMENT, [idle, ours, deliberate], awake) == [("mlflow", 2)]
    assert switch.idled(CRONJOB, [idle], awake) == []
    # Without --revive only what this switch slept wakes; with it, the idled one comes back to its count.
    assert switch.wake_plan(DEPLOYMENT, idle, awake, revive=False) is None
    action = switch.wake_plan(DEPLOYMENT, idle, awake, revive=True)
    assert action is not None and action.restored
    assert action.patch == {"metadata": {"resourceVersion": "7"}, "spec": {"replicas": 2}}
    assert switch.wake_plan(DEPLOYMENT, deliberate, awake, revive=True) is None
    # A slept one wakes with the operator's own patch (annotations cleared), revive or not.
    for revive in (False, True):
        plan = switch.wake_plan(DEPLOYMENT, ours, awake, revive=revive)
        assert plan == workloads.wake_action(DEPLOYMENT, ours)


def test_not_ready() -> None:
    ready = obj("a", 2, status={"readyReplicas": 2, "replicas": 2})
    starting = obj("b", 2, status={"readyReplicas": 1, "replicas": 2})
    assert switch.not_ready(DEPLOYMENT, [ready, starting], ["a", "b", "deleted"]) == ["b"]
    assert switch.not_ready(DEPLOYMENT, [starting], []) == []
