"""crds/trainingrun.yaml: names fixed by the issue, a description on every field, the CEL rules there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kto_operator import naming

CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "trainingrun.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    [only] = crd["spec"]["versions"]
    return dict(only)


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


SCHEMA_KEYS = {"type", "description", "properties", "items", "required", "enum", "default", "format", "pattern",
               "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "maxItems",
               "maxProperties", "additionalProperties", "anyOf", "x-kubernetes-int-or-string",
               "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations", "x-kubernetes-list-type",
               "x-kubernetes-list-map-keys"}


def test_schema_uses_only_known_keywords(version: dict[str, Any]) -> None:
    # A comma inside an unquoted flow-style description silently turns its tail into a bogus keyword.
    root = version["schema"]["openAPIV3Schema"]
    bad = [(path, sorted(set(schema) - SCHEMA_KEYS)) for path, schema in walk(root, "TrainingRun")
           if set(schema) - SCHEMA_KEYS]
    assert not bad, bad


def test_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "trainingruns.kto.dev"
    spec = crd["spec"]
    assert spec["group"] == "kto.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "TrainingRun"
    assert spec["names"]["plural"] == "trainingruns"
    # Tekton TaskRun: tr, trs; PipelineRun: pr, prs; Kubeflow, Argo, Knative, KServe, Kueue, OpenShift: none is ktr.
    assert spec["names"]["shortNames"] == ["ktr"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"] if not c.get("priority")}
    assert list(columns) == ["Phase", "Experiment", "Run-ID", "Metric", "Age"]
    assert columns["Run-ID"] == ".status.mlflow.runId"


def test_every_field_has_a_description(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    missing = [path for path, schema in walk(root, "TrainingRun")
               if not schema.get("description") and path != "TrainingRun.metadata"]
    assert not missing, missing


def test_spec_fields(version: dict[str, Any]) -> None:
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"image", "experiment"}
    assert set(spec["properties"]) >= {
        "image", "experiment", "command", "parameters", "resources", "env", "s3", "mlflow", "backoffLimit",
        "activeDeadlineSeconds", "ttlSecondsAfterFinished", "cancel", "registerModel", "nodeSelector",
        "tolerations", "serviceAccountName"}
    assert spec["properties"]["backoffLimit"]["default"] == 0


def test_fields_copied_into_the_jobs_int32_fields_stop_at_its_limit(version: dict[str, Any]) -> None:
    """Above it a run would pass the CRD and fail at its Job's create; the operator's own default has the same cap."""
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["ttlSecondsAfterFinished"]["maximum"] == naming.INT32_MAX
    assert spec["backoffLimit"]["maximum"] <= naming.INT32_MAX


def test_status_fields(version: dict[str, Any]) -> None:
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) >= {"phase", "reason", "message", "conditions", "mlflow", "jobName", "startTime",
                           "completionTime", "progress", "metrics", "modelVersion", "observedGeneration"}
    assert status["phase"]["enum"] == ["Pending", "WaitingForPlatform", "Running", "Succeeded", "Failed",
                                       "Cancelled"]


def test_kopfs_bookkeeping_is_kept_in_both_crds(version: dict[str, Any]) -> None:
    """kopf's diff base and retry progress live in status.kopf: a CRD that pruned it would make every event
    look like a new creation to kopf."""
    power = yaml.safe_load((CRD_PATH.parent / "powerschedule.yaml").read_text())
    for found in (version, power["spec"]["versions"][0]):
        kopf = found["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["kopf"]
        assert kopf["x-kubernetes-preserve-unknown-fields"] is True


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key twice in one mapping, as kustomize does (safe_load keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate key at line {node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


@pytest.mark.parametrize("name", sorted(p.name for p in CRD_PATH.parent.glob("*.yaml")))
def test_no_key_twice_in_a_crd(name: str) -> None:
    assert list(yaml.load_all((CRD_PATH.parent / name).read_text(), Loader=_StrictLoader))


def test_immutability_rules_cover_every_field_but_cancel(version: dict[str, Any]) -> None:
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    for field in spec["properties"]:
        if field != "cancel":
            assert f"self.{field} == oldSelf.{field}" in rules, field
    assert "self.cancel == oldSelf.cancel" not in rules


def test_ratio_rule(version: dict[str, Any]) -> None:
    parameters = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parameters"]
    rules = [r["rule"] for r in parameters["x-kubernetes-validations"]]
    assert any("0.000001" in r for r in rules)
    for ratio in ("split_ratio_train", "split_ratio_evaluate", "split_ratio_test"):
        prop = parameters["properties"][ratio]
        assert prop["exclusiveMinimum"] and prop["minimum"] == 0
        assert prop["exclusiveMaximum"] and prop["maximum"] == 1
    for integer in ("batch_size", "epochs"):
        assert parameters["properties"][integer] == {**parameters["properties"][integer], "type": "integer",
                                                     "minimum": 1}
