"""Fuzzed specs (hypothesis): every random TrainingRun and PowerSchedule spec is either rejected by the API
server with a message, or handled by the operator (a status appears) without an exception in its log.

TrainingRuns go to a namespace with a ResourceQuota of 0 pods: the operator creates the MLflow run and the
Job, no trainer ever starts. Tracking URIs are drawn from a fixed set (the bed's MLflow, a refused port,
malformed ones): the fuzz is about specs, not about pointing the operator at arbitrary hosts or paths.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.chaos.support import TRACEBACK, until
from tests.integration.operator_fixtures import Operator
from tests.integration.power_support import PowerOperator, apply_crds

GROUP, VERSION = "kto.dev", "v1alpha1"
HANDLED_TIMEOUT_S = 45

# --- strategies ------------------------------------------------------------------------------------------
texts = st.text(max_size=24)
names = st.one_of(st.sampled_from(["a", "s3-creds", "x" * 253, "Bad_Name", "-x", ""]), texts)
numbers = st.one_of(st.integers(-3, 3), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.8, 0.1, 0.5, 1e-9, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                        max_leaves=6)
quantities = st.one_of(st.sampled_from(["1", "500m", "1Gi", "0", "-1", "1e3", "lots", "1.5Ki"]), st.integers(-2, 10**6),
                       texts)
param_keys = st.one_of(st.sampled_from(["split_ratio_train", "split_ratio_evaluate", "split_ratio_test", "batch_size",
                                        "epochs", "working_dir", "model_filename", "model_plot_filename", "lr",
                                        "x y", "--a", "é", "a" * 260]), texts)
parameters = st.dictionaries(param_keys, st.one_of(numbers, texts, st.booleans(), anything), max_size=6)
env_vars = st.lists(st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["A", "MLFLOW_RUN_ID", "AWS_ACCESS_KEY_ID", "PATH", "1X"]), texts)},
    optional={"value": texts, "valueFrom": st.one_of(
        st.fixed_dictionaries({"secretKeyRef": st.fixed_dictionaries({"name": names, "key": names})}),
        st.fixed_dictionaries({"fieldRef": st.fixed_dictionaries({"fieldPath": st.sampled_from(
            ["metadata.name", "status.podIP", "spec.nope", ""])})}),
        anything)}), max_size=4)
tolerations = st.lists(st.fixed_dictionaries({}, optional={
    "key": texts, "operator": st.sampled_from(["Exists", "Equal", "Maybe"]), "value": texts,
    "effect": st.sampled_from(["NoSchedule", "NoExecute", "Sometimes"]), "tolerationSeconds": numbers}), max_size=3)


def trainingrun_specs(tracking_uri: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"image": st.one_of(st.sampled_from(["kto-standin-trainer:1", "python:3.11", "registry.invalid/x:1", "",
                                             "UPPER/case:tag", "a" * 600]), texts),
         "experiment": st.one_of(st.sampled_from(["fuzz", "fuzz/åäö", "fuzz " * 60, ""]), texts)},
        optional={
            "command": st.lists(texts, max_size=4),
            "parameters": parameters,
            "resources": st.fixed_dictionaries({}, optional={
                "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "bad key"]),
                                          quantities, max_size=3),
                "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2)}),
            "env": env_vars,
            "s3": st.fixed_dictionaries({}, optional={
                "endpoint": st.one_of(st.sampled_from(["http://127.0.0.1:9", "minio:9000"]), texts),
                "credentialsSecret": names}),
            "mlflow": st.fixed_dictionaries({}, optional={
                "trackingUri": st.sampled_from([tracking_uri, "http://127.0.0.1:9", "ftp://x", "", "http://"]),
                "credentialsSecret": names}),
            "backoffLimit": numbers,
            "activeDeadlineSeconds": numbers,
            "ttlSecondsAfterFinished": numbers,
            "cancel": st.one_of(st.booleans(), texts),
            "registerModel": st.fixed_dictionaries({}, optional={
                "name": names, "metric": names, "threshold": numbers, "greaterIsBetter": st.booleans(),
                "artifactPath": texts}),
            "nodeSelector": st.dictionaries(st.one_of(st.sampled_from(["kubernetes.io/os", "bad key!", "a/b/c"]),
                                                      texts), texts, max_size=2),
            "tolerations": tolerations,
            "serviceAccountName": names,
            "unknownField": anything,
        })


crons = st.one_of(st.sampled_from(["0 8 * * 1-5", "*/5 * * * *", "0 20 * * *", "61 * * * *", "@daily", "* * *",
                                   "0 0 31 2 *", "0 8 * * MON-FRI", ""]), texts)
selectors = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(st.one_of(st.sampled_from(["app", "axa.com/dailyclean", "bad key!"]), texts),
                                   texts, max_size=2),
    "matchExpressions": st.lists(st.fixed_dictionaries(
        {"key": st.one_of(st.just("app"), texts), "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist",
                                                                               "Near"])},
        optional={"values": st.lists(texts, max_size=3)}), max_size=2)})
powerschedule_specs = st.fixed_dictionaries({}, optional={
    "state": st.one_of(st.sampled_from(["on", "off", "On", ""]), texts),
    "schedule": st.fixed_dictionaries({}, optional={
        "on": crons, "off": crons,
        "timezone": st.one_of(st.sampled_from(["Europe/Paris", "UTC", "America/St_Johns", "Mars/Olympus", "",
                                               "../../etc/passwd"]), texts)}),
    "idleAfter": st.one_of(st.sampled_from(["30m", "1h", "1h30m", "0s", "90", "-5m", ""]), texts),
    "wakeOnRun": st.one_of(st.booleans(), texts),
    "selector": selectors,
    "exclude": st.lists(selectors, max_size=2),
})


# --- the check ---------------------------------------------------------------------------------------------
class Fuzz:
    """Create one object per example; accepted ones must get a status from the operator, and the operator log
    must stay free of tracebacks."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, plural: str, kind: str,
                 log: Any, handled: Any) -> None:
        self.custom, self.namespace, self.plural, self.kind = custom, namespace, plural, kind
        self.log, self.handled = log, handled
        self.counter = itertools.count()
        self.accepted = self.rejected = 0

    def check(self, spec: dict[str, Any]) -> str | None:
        """Name of the created object, or None when the API server refused it (with a message)."""
        name = f"fuzz-{next(self.counter)}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": self.kind, "metadata": {"name": name}, "spec": spec}
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, body)
        except ApiException as err:
            assert err.status in (400, 422), f"unexpected {err.status} for {json.dumps(spec)[:500]}"
            message = json.loads(err.body or "{}").get("message", "")
            assert message.strip(), f"rejected without a message: {err.body}"
            self.rejected += 1
            return None
        self.accepted += 1
        until(lambda: self.handled(name), HANDLED_TIMEOUT_S, f"the operator handling {name}: {json.dumps(spec)[:500]}")
        log = self.log()
        assert TRACEBACK not in log, f"operator traceback after {json.dumps(spec)[:1000]}:\n" + log[
            log.index(TRACEBACK) - 300: log.index(TRACEBACK) + 3000]
        return name


def _status(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> dict[str, Any]:
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except ApiException as err:
        if err.status == 404:
            return {"gone": True}
        raise
    return dict(obj.get("status") or {})


def _settings(examples: int) -> Any:
    # No shrinking: every example costs seconds on the bed; the failing spec is in the assertion message.
    return settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def no_pods(bed: Any, namespace: str) -> str:
    core = client.CoreV1Api(bed.api())
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    until(lambda: core.read_namespaced_resource_quota("no-pods", namespace).status.hard, 30, "quota status")
    return namespace


@pytest.fixture
def fuzz_crds(bed: Any) -> None:
    apply_crds(bed)


@pytest.fixture
def tr_operator(bed: Any, no_pods: str, fuzz_crds: None, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(bed, no_pods, tmp_path).start()
    custom = client.CustomObjectsApi(bed.api())
    yield op
    try:  # delete the runs with the operator still there (its finalizer)
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, no_pods, "trainingruns")["items"]:
            custom.delete_namespaced_custom_object(GROUP, VERSION, no_pods, "trainingruns", item["metadata"]["name"])
        until(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, no_pods, "trainingruns")["items"], 120,
              "fuzzed runs deleted")
    finally:
        op.stop()
        print(op.log()[-5000:])


def fuzz_trainingruns(bed: Any, op: Operator, namespace: str, examples: int) -> None:
    custom = client.CustomObjectsApi(bed.api())
    fuzz = Fuzz(custom, namespace, "trainingruns", "TrainingRun", op.log,
                lambda name: _status(custom, namespace, "trainingruns", name).get("phase"))

    @_settings(examples)
    @given(spec=trainingrun_specs(bed.env["MLFLOW_TRACKING_URI"]))
    def one(spec: dict[str, Any]) -> None:
        fuzz.check(spec)

    one()
    print(f"TrainingRun specs: {fuzz.accepted} accepted and handled, {fuzz.rejected} rejected with a message")
    assert op.alive()
    assert fuzz.accepted >= examples // 10, "too few accepted specs: the strategy no longer reaches the operator"


@pytest.fixture
def power_operator(bed: Any, namespace: str, fuzz_crds: None, tmp_path: Path) -> Iterator[PowerOperator]:
    op = PowerOperator(bed, namespace, tmp_path, full=True).start()  # the product: python -m kto_operator
    yield op
    op.stop()
    print(op.log()[-5000:])


def fuzz_powerschedules(bed: Any, op: PowerOperator, namespace: str, examples: int) -> None:
    """One PowerSchedule at a time (only the oldest of a namespace governs), deleted after it was handled."""
    custom = client.CustomObjectsApi(bed.api())

    def handled(name: str) -> bool:
        st_ = _status(custom, namespace, "powerschedules", name)
        return bool(st_.get("state") or st_.get("reason") or st_.get("gone"))

    fuzz = Fuzz(custom, namespace, "powerschedules", "PowerSchedule", op.log, handled)

    @_settings(examples)
    @given(spec=powerschedule_specs)
    def one(spec: dict[str, Any]) -> None:
        name = fuzz.check(spec)
        if name is not None:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "powerschedules", name)
            until(lambda: _status(custom, namespace, "powerschedules", name).get("gone"), 30, f"{name} deleted")

    one()
    print(f"PowerSchedule specs: {fuzz.accepted} accepted and handled, {fuzz.rejected} rejected with a message")
    assert op.alive()
    assert fuzz.accepted >= examples // 10, "too few accepted specs: the strategy no longer reaches the operator"


@pytest.mark.integration
def test_fuzzed_trainingruns_short(bed: Any, tr_operator: Operator, no_pods: str) -> None:
    fuzz_trainingruns(bed, tr_operator, no_pods, examples=30)


@pytest.mark.integration
def test_fuzzed_powerschedules_short(bed: Any, power_operator: PowerOperator, namespace: str) -> None:
    fuzz_powerschedules(bed, power_operator, namespace, examples=20)


@pytest.mark.chaos
def test_fuzzed_trainingruns(bed: Any, tr_operator: Operator, no_pods: str) -> None:
    fuzz_trainingruns(bed, tr_operator, no_pods, examples=300)


@pytest.mark.chaos
def test_fuzzed_powerschedules(bed: Any, power_operator: PowerOperator, namespace: str) -> None:
    fuzz_powerschedules(bed, power_operator, namespace, examples=150)


def test_strategies_draw_json_documents() -> None:
    """Pure: every drawn spec is a JSON document (the API server gets exactly what was drawn)."""
    @settings(max_examples=50, deadline=None, database=None)
    @given(tr=trainingrun_specs("http://127.0.0.1:1"), ps=powerschedule_specs)
    def roundtrip(tr: dict[str, Any], ps: dict[str, Any]) -> None:
        assert json.loads(json.dumps(tr)) == tr and json.loads(json.dumps(ps)) == ps

    roundtrip()

