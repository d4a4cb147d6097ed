"""The demo's path end to end, smaller: platform manifests on the bed, digits dataset, the operator in a
pod on its own ServiceAccount, the example TrainingRun (1 epoch) to Succeeded, then platform off and on."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from kto_bed.controlplane import Ports
from kto_bed.demo import Demo, mlflow_up, run_all
from kto_bed.paths import BedPaths
from kubernetes import client
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration


def test_demo_path_end_to_end(bed):
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    out = io.StringIO()
    demo = Demo(BedPaths.default(), Ports.from_env(), ns, out=out, epochs=1)
    core = client.CoreV1Api(bed.api())
    try:
        tr = run_all(demo, count=60, timeout=600)
        status = tr["status"]
        assert status["phase"] == "Succeeded"
        assert 0.0 <= status["metrics"]["test_accuracy"] <= 1.0
        run = MlflowClient(tracking_uri=demo.mlflow_url).get_run(status["mlflow"]["runId"])
        assert run.info.status == "FINISHED"
        assert run.data.params["epochs"] == "1"
        printed = out.getvalue()
        assert re.search(r"cats-dogs-other-1\s+Succeeded\s+cats-dogs-other\s+[0-9a-f]{32}", printed), printed
        assert "unreachable (asleep)" in printed
        assert "Replica counts restored exactly: yes" in printed
        assert mlflow_up(demo.mlflow_url)
    finally:
        core.delete_namespace(ns, propagation_policy="Background")
