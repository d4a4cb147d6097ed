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
from tests.helpers import figure
from tests.integration.operator_fixtures import Operator
from tests.integration.power_support import PowerOperator, apply_crds

GROUP, VERSION = "kto.dev", "v1alpha1"
HANDLED_TIMEOUT_S = 45

# --- strategies ------------------------------------------------------------------------------------------
# Each spec is drawn valid per the CRD (so that most reach the operator), and half of them get one field
# replaced by something hostile (so that the API server's validation is fuzzed too). "Valid per the CRD"
# still leaves plenty that the API server refuses later, when the operator creates the Job (an image with
# spaces, an env name that is not an identifier, a label key with a '!'): the operator must cope.
texts = st.text(max_size=24)
names = st.one_of(st.sampled_from(["a", "s3-creds", "x" * 253, "Bad_Name", "-x"]), texts)
numbers = st.one_of(st.integers(-3, 3), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.8, 0.1, 0.5, 1e-9, 2**63]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                        max_leaves=6)


def _spec(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]],
          hostile: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    base = st.fixed_dictionaries(required, optional=optional)

    def mutate(spec: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.sampled_from(sorted(hostile)).flatmap(lambda key: hostile[key].map(lambda v: {**spec, key: v}))

    return st.one_of(base, base.flatmap(mutate))


quantities = st.sampled_from(["1", "500m", "1Gi", "0", "1e3", "1.5Ki", "128Mi"])
ratios = st.sampled_from([{"split_ratio_train": 0.8, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1},
                          {"split_ratio_train": 0.6, "split_ratio_evaluate": 0.2, "split_ratio_test": 0.2}, {}])
known_parameters = st.fixed_dictionaries({}, optional={
    "batch_size": st.integers(1, 2**31), "epochs": st.integers(1, 2**31), "working_dir": texts,
    "model_filename": texts, "model_plot_filename": texts})
extra_parameters = st.dictionaries(st.one_of(st.sampled_from(["lr", "x y", "--a", "é", "a" * 260, "dropout"]), texts),
                                   st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts,
                                             st.booleans(), anything), max_size=3)
parameters = st.builds(lambda r, k, e: {**e, **k, **r}, ratios, known_parameters, extra_parameters)
env_vars = st.lists(st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["A", "PATH", "AWS_ACCESS_KEY_ID", "1X"]),
                                             st.text(min_size=1, max_size=20)), "value": texts}),
    st.fixed_dictionaries({"name": st.just("S"), "valueFrom": st.fixed_dictionaries(
        {"secretKeyRef": st.fixed_dictionaries({"name": names, "key": names})})}),
    st.fixed_dictionaries({"name": st.just("F"), "valueFrom": st.fixed_dictionaries({"fieldRef": st.fixed_dictionaries(
        {"fieldPath": st.sampled_from(["metadata.name", "status.podIP", "spec.nope", "x"])})})})), max_size=4)
tolerations = st.lists(st.fixed_dictionaries({}, optional={
    "key": texts, "operator": st.sampled_from(["Exists", "Equal"]), "value": st.text(max_size=20),
    "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    "tolerationSeconds": st.integers(-10, 10**6)}), max_size=3)


def trainingrun_specs(tracking_uri: str) -> st.SearchStrategy[dict[str, Any]]:
    valid: dict[str, st.SearchStrategy[Any]] = {
        "command": st.lists(texts, max_size=4),
        "parameters": parameters,
        "resources": st.fixed_dictionaries({}, optional={
            "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "bad key"]), quantities,
                                      max_size=3),
            "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2)}),
        "env": env_vars,
        "s3": st.fixed_dictionaries({}, optional={
            "endpoint": st.sampled_from(["http://127.0.0.1:9", "https://s3.example.com", "http://x y"]),
            "credentialsSecret": names}),
        "mlflow": st.fixed_dictionaries({}, optional={
            "trackingUri": st.sampled_from([tracking_uri, "http://127.0.0.1:9"]), "credentialsSecret": names}),
        "backoffLimit": st.integers(0, 10),
        "activeDeadlineSeconds": st.integers(1, 2**40),
        "ttlSecondsAfterFinished": st.integers(0, 2**31),
        "cancel": st.booleans(),
        "registerModel": st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=40), "metric": st.text(min_size=1, max_size=40),
             "threshold": st.floats(allow_nan=False, allow_infinity=False)},
            optional={"greaterIsBetter": st.booleans(), "artifactPath": texts}),
        "nodeSelector": st.dictionaries(st.one_of(st.sampled_from(["kubernetes.io/os", "bad key!", "a/b/c"]),
                                                  st.text(max_size=20)), st.text(max_size=20), max_size=2),
        "tolerations": tolerations,
        "serviceAccountName": names,
    }
    hostile = {key: anything for key in [*valid, "image", "experiment", "unknownField"]}
    hostile["mlflow"] = st.fixed_dictionaries({"trackingUri": st.sampled_from(["ftp://x", "", "http://", "file:"])})
    return _spec({"image": st.one_of(st.sampled_from(["kto-standin-trainer:0.1.0", "python:3.11",
                                                      "registry.invalid/x:1", "UPPER/case:tag", " spaced ", "a" * 512]),
                                     st.text(min_size=1, max_size=40)),
                  "experiment": st.one_of(st.sampled_from(["fuzz", "fuzz/åäö", "fuzz " * 50]),
                                          st.text(min_size=1, max_size=40))},
                 valid, hostile)


crons = st.one_of(st.sampled_from(["0 8 * * 1-5", "*/5 * * * *", "0 20 * * *", "61 * * * *", "@daily", "* * *",
                                   "0 0 31 2 *", "0 8 * * MON-FRI", "0 0 29 2 *"]), st.text(max_size=30))
selectors = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(st.one_of(st.sampled_from(["app", "axa.com/dailyclean", "bad key!"]),
                                             st.text(max_size=20)), st.text(max_size=20), max_size=2),
    "matchExpressions": st.lists(st.fixed_dictionaries(
        {"key": st.one_of(st.just("app"), st.text(max_size=20)),
         "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"])},
        optional={"values": st.lists(st.text(max_size=20), max_size=3)}), max_size=2)})
_power_valid: dict[str, st.SearchStrategy[Any]] = {
    "schedule": st.fixed_dictionaries({}, optional={
        "on": crons, "off": crons,
        "timezone": st.one_of(st.sampled_from(["Europe/Paris", "UTC", "America/St_Johns", "Mars/Olympus",
                                               "../../etc/passwd", "Etc/GMT+14"]), st.text(max_size=30))}),
    "idleAfter": st.one_of(st.sampled_from(["30m", "1h", "1h30m", "0s", "90", "-5m", "999999h"]), st.text(max_size=20)),
    "wakeOnRun": st.booleans(),
    "selector": selectors,
    "exclude": st.lists(selectors, max_size=2),
}
powerschedule_specs = _spec({"state": st.sampled_from(["on", "off"])}, _power_valid,
                            {key: anything for key in [*_power_valid, "state"]})


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
        self.messages: list[str] = []

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
            self.messages.append(message)
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
    # Runs pointing at the refused tracking URI are deleted at the end: no MLflow clean-up retries.
    op = Operator(bed, no_pods, tmp_path, env={"KTO_DELETE_RETRIES": "0", "KTO_MLFLOW_RETRY_DELAY": "1",
                                               "KTO_MLFLOW_RETRY_MAX_DELAY": "2"}).start()
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
    figure("fuzz", f"TrainingRun specs: {fuzz.accepted} accepted and handled, {fuzz.rejected} rejected with a message")
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
    figure("fuzz",
           f"PowerSchedule specs: {fuzz.accepted} accepted and handled, {fuzz.rejected} rejected with a message")
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



@pytest.mark.integration
def test_job_refused_by_the_api_server_fails_the_run(bed: Any, tr_operator: Operator, no_pods: str) -> None:
    """Regression (found by the fuzz): a spec the CRD accepts but a Job cannot hold was retried forever,
    with a traceback each time. Now: Failed, reason InvalidSpec, the API server's message, MLflow FAILED."""
    from tests.integration.operator_fixtures import Runs, mlflow_client

    runs = Runs(bed, no_pods)
    runs.submit("bad-selector", nodeSelector={"bad key!": "x"}, parameters={"epochs": 1})
    st_ = runs.wait_phase("bad-selector", ("Failed", "Succeeded"), 60)
    assert (st_["phase"], st_["reason"]) == ("Failed", "InvalidSpec"), st_
    assert "nodeSelector" in st_["message"] and "refused the trainer Job" in st_["message"]
    assert not runs.jobs()
    assert mlflow_client(bed.env["MLFLOW_TRACKING_URI"]).get_run(st_["mlflow"]["runId"]).info.status == "FAILED"
    assert TRACEBACK not in tr_operator.log()
