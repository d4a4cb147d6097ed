"""Workload selection and the sleep/wake annotation logic, on plain dicts."""

from __future__ import annotations

from typing import Any

import pytest
from kto_operator import naming
from kto_operator.power import workloads as w
from kto_operator.power.workloads import CRONJOB, DEPLOYMENT, STATEFULSET, Selection

NOW = "2026-06-10T19:00:00Z"


def obj(name: str, replicas: int | None = 1, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, rv: str = "7", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "resourceVersion": rv, "labels": labels or {},
                                         "annotations": annotations or {}}, "spec": dict(spec)}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body


def apply(o: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), enough for these tests."""
    out = dict(o)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = apply(out.get(k) or {}, v)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(("labels", "selection", "kind", "excluded"), [
    ({}, Selection(), DEPLOYMENT, None),
    ({"app.kubernetes.io/name": "kto-operator"}, Selection(), DEPLOYMENT, "the operator itself"),
    ({"app.kubernetes.io/name": "kto-operator"}, Selection(), STATEFULSET, None),
    ({"axa.com/dailyclean": "false"}, Selection(), DEPLOYMENT, "labelled axa.com/dailyclean=false"),
    ({"axa.com/dailyclean": "False"}, Selection(), CRONJOB, "labelled axa.com/dailyclean=false"),
    ({"axa.com/dailyclean": "true"}, Selection(), DEPLOYMENT, None),
    ({"tier": "platform"}, Selection(selector={"matchLabels": {"tier": "platform"}}), DEPLOYMENT, None),
    ({"tier": "web"}, Selection(selector={"matchLabels": {"tier": "platform"}}), DEPLOYMENT,
     "not selected by spec.selector"),
    ({"tier": "db"}, Selection(selector={"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["db", "platform"]}]}), STATEFULSET, None),
    ({"keep": "1"}, Selection(exclude=({"matchLabels": {"keep": "1"}},)), DEPLOYMENT, "matched spec.exclude[0]"),
    ({"keep": "1"}, Selection(exclude=({"matchLabels": {"x": "y"}}, {"matchExpressions": [
        {"key": "keep", "operator": "Exists"}]})), DEPLOYMENT, "matched spec.exclude[1]"),
    ({}, Selection(exclude=({"matchExpressions": [{"key": "keep", "operator": "DoesNotExist"}]},)),
     DEPLOYMENT, "matched spec.exclude[0]"),
    ({"env": "prod"}, Selection(exclude=({"matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["dev"]}]},)), DEPLOYMENT, "matched spec.exclude[0]"),
    ({}, Selection(exclude=({},)), DEPLOYMENT, None),  # an empty exclude (CEL forbids it) excludes nothing
])
def test_exclusion(labels: dict[str, str], selection: Selection, kind: str, excluded: str | None) -> None:
    assert w.exclusion(kind, obj("x", labels=labels), selection) == excluded


def test_operator_deployment_by_name() -> None:
    sel = Selection.from_spec({}, operator_deployment="my-operator")
    assert w.exclusion(DEPLOYMENT, obj("my-operator"), sel) == "the operator itself"
    assert w.managed(DEPLOYMENT, [obj("my-operator"), obj("mlflow")], sel) == [obj("mlflow")]


@pytest.mark.parametrize("n", [1, 3, 7])
def test_sleep_then_wake_restores_exactly(n: int) -> None:
    d = obj("mlflow", replicas=n)
    patch = w.sleep_patch(DEPLOYMENT, d, "power", NOW)
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "7"  # optimistic concurrency
    asleep = apply(d, patch)
    assert asleep["spec"]["replicas"] == 0
    assert asleep["metadata"]["annotations"][naming.ANNOTATION_SAVED_REPLICAS] == str(n)
    assert asleep["metadata"]["annotations"][naming.ANNOTATION_SET_REPLICAS] == "0"
    assert w.asleep_by_us(asleep)
    assert w.sleep_patch(DEPLOYMENT, asleep, "power", NOW) is None  # idempotent
    assert w.status_workloads({DEPLOYMENT: [asleep]}) == [{"kind": DEPLOYMENT, "name": "mlflow", "savedReplicas": n}]
    action = w.wake_action(DEPLOYMENT, asleep)
    assert action is not None and action.restored
    awake = apply(asleep, action.patch)
    assert awake["spec"]["replicas"] == n
    assert not any(k.startswith("kto.dev/") for k in awake["metadata"]["annotations"])
    assert w.wake_action(DEPLOYMENT, awake) is None


def test_default_replicas_is_one() -> None:
    patch = w.sleep_patch(STATEFULSET, obj("db", replicas=None), "power", NOW)
    assert patch is not None and patch["metadata"]["annotations"][naming.ANNOTATION_SAVED_REPLICAS] == "1"


def test_zero_replicas_is_left_alone() -> None:
    assert w.sleep_patch(DEPLOYMENT, obj("idle", replicas=0), "power", NOW) is None


@pytest.mark.parametrize("human", [1, 2, 5])
def test_human_edit_while_asleep_is_kept(human: int) -> None:
    asleep = apply(obj("mlflow", replicas=3), w.sleep_patch(DEPLOYMENT, obj("mlflow", replicas=3), "p", NOW) or {})
    asleep["spec"]["replicas"] = human  # kubectl scale while asleep
    action = w.wake_action(DEPLOYMENT, asleep)
    assert action is not None and not action.restored
    awake = apply(asleep, action.patch)
    assert awake["spec"]["replicas"] == human
    assert not w.asleep_by_us(awake)
    assert "by hand" in action.detail


def test_cronjob_suspend_and_resume() -> None:
    cj = obj("nightly", replicas=None, schedule="0 1 * * *", suspend=False)
    patch = w.sleep_patch(CRONJOB, cj, "power", NOW)
    assert patch is not None
    asleep = apply(cj, patch)
    assert asleep["spec"]["suspend"] is True
    assert asleep["metadata"]["annotations"][naming.ANNOTATION_SAVED_SUSPEND] == "false"
    assert w.status_workloads({CRONJOB: [asleep]}) == [{"kind": CRONJOB, "name": "nightly", "savedSuspend": False}]
    action = w.wake_action(CRONJOB, asleep)
    assert action is not None and action.restored
    assert apply(asleep, action.patch)["spec"]["suspend"] is False


def test_cronjob_already_suspended_stays_suspended() -> None:
    assert w.sleep_patch(CRONJOB, obj("c", replicas=None, suspend=True), "power", NOW) is None


def test_cronjob_resumed_by_hand_while_asleep() -> None:
    cj = obj("c", replicas=None, suspend=False)
    asleep = apply(cj, w.sleep_patch(CRONJOB, cj, "p", NOW) or {})
    asleep["spec"]["suspend"] = False
    action = w.wake_action(CRONJOB, asleep)
    assert action is not None and not action.restored
    assert "suspend" not in action.patch.get("spec", {})


def test_unreadable_saved_value_is_not_guessed() -> None:
    d = obj("x", replicas=0,
            annotations={naming.ANNOTATION_SAVED_REPLICAS: "three", naming.ANNOTATION_SET_REPLICAS: "0"})
    action = w.wake_action(DEPLOYMENT, d)
    assert action is not None and not action.restored and "spec" not in action.patch


@pytest.mark.parametrize(("spec_replicas", "status", "generation", "ready"), [
    (3, {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3}, 2, True),
    (3, {"observedGeneration": 2, "replicas": 3, "readyReplicas": 2}, 2, False),
    (3, {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3}, 2, False),  # not yet seen the change
    (0, {"observedGeneration": 2}, 2, True),
    (2, {}, 1, False),
])
def test_ready(spec_replicas: int, status: dict[str, int], generation: int, ready: bool) -> None:
    d = obj("x", replicas=spec_replicas)
    d["metadata"]["generation"] = generation
    d["status"] = status
    assert w.ready(DEPLOYMENT, d) is ready
    assert w.ready(CRONJOB, d) is True


def test_annotation_keys_are_ours() -> None:
    assert all(k.startswith("kto.dev/") for k in w.OURS)
    assert w.KINDS[0] == STATEFULSET  # databases wake first
