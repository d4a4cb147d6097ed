# ruff: noqa: F811  (the fixture imported from operator_fixtures is re-bound as a test argument)
"""Our short names next to OpenShift Pipelines: Tekton's TaskRun CRD (same names as Tekton ships: group
tekton.dev, plural taskruns, short names tr and trs) installed beside ours; `kubectl get ktr` lists
TrainingRuns, `kubectl get tr` TaskRuns, and kubectl warns about no ambiguity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import wait_for
from tests.integration.operator_fixtures import GROUP, PLURAL, VERSION, trainingrun_crd  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

TEKTON_CRD = "taskruns.tekton.dev"


def _tekton_taskrun_crd() -> dict[str, Any]:
    """The names of Tekton's TaskRun CRD; the schema is left open (only the names matter here)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": TEKTON_CRD, "labels": {"kto.dev/test": "true"}},
        "spec": {
            "group": "tekton.dev", "scope": "Namespaced",
            "names": {"kind": "TaskRun", "listKind": "TaskRunList", "plural": "taskruns", "singular": "taskrun",
                      "shortNames": ["tr", "trs"], "categories": ["tekton", "tekton-pipelines"]},
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


@pytest.fixture
def tekton_crd(bed: Any) -> Iterator[None]:
    existed = bed.kubectl("get", "crd", TEKTON_CRD, check=False).returncode == 0
    if not existed:
        bed.kubectl("create", "-f", "-", input=yaml.safe_dump(_tekton_taskrun_crd()))
    bed.kubectl("wait", "--for=condition=Established", f"crd/{TEKTON_CRD}", "--timeout=60s")
    yield
    if not existed:
        bed.kubectl("delete", "crd", TEKTON_CRD, "--wait=false", check=False)


def test_ktr_is_ours_and_tr_stays_tektons(bed: Any, namespace: str, trainingrun_crd: None, tekton_crd: None,
                                          tmp_path: Path) -> None:
    custom = client.CustomObjectsApi(bed.api())
    ours, theirs = f"train-{uuid.uuid4().hex[:6]}", f"task-{uuid.uuid4().hex[:6]}"
    # No operator runs here: the TrainingRun only has to exist.
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": ours},
        "spec": {"image": "kto-trainer:0.1.0", "experiment": "names"}})
    custom.create_namespaced_custom_object("tekton.dev", "v1", namespace, "taskruns", {
        "apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": {"name": theirs}, "spec": {}})

    def get(short: str) -> Any:
        # A fresh discovery cache each time: kubectl must see both CRDs as the API server serves them now.
        cache = tmp_path / f"cache-{uuid.uuid4().hex[:6]}"
        return bed.kubectl("get", short, "-n", namespace, "-o", "name", "--cache-dir", str(cache), check=False)

    for short, kind, name in (("ktr", "trainingrun.kto.dev", ours), ("trainingruns", "trainingrun.kto.dev", ours),
                              ("tr", "taskrun.tekton.dev", theirs), ("trs", "taskrun.tekton.dev", theirs)):
        done = wait_for(lambda s=short: (d := get(s)).returncode == 0 and d.stdout.strip() and d, 30,
                        f"kubectl get {short}")
        assert done.stdout.split() == [f"{kind}/{name}"], (short, done.stdout)
        assert "could also match" not in done.stderr and "Warning" not in done.stderr, (short, done.stderr)

    # Discovery: no other served resource claims our short names (the SHORTNAMES column, comma-separated).
    resources = bed.kubectl("api-resources", "--no-headers", "--cache-dir", str(tmp_path / "cache-all")).stdout
    owners = {short: [line.split()[0] for line in resources.splitlines()
                      if short in {t for word in line.split()[1:2] for t in word.split(",")}]
              for short in ("ktr", "power", "tr")}
    assert owners["ktr"] == ["trainingruns"] and owners["tr"] == ["taskruns"], owners
    assert owners["power"] in ([], ["powerschedules"]), owners
