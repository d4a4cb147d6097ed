"""Namespace users, not cluster admins, on the bed's real RBAC (impersonation: the API server checks each request
as the named user). With the CRDs and their ClusterRoles installed (the admin step), in an OpenShift-like
namespace:
- a namespace `admin` applies manifests/operator: its Role grants rights on TrainingRuns' subresources, which
  the API server lets a user grant only if they hold them, through kto-edit aggregated to admin;
- an `edit`-only user creates TrainingRuns and cancels one; a run asking for the operator's own ServiceAccount
  fails with a clear reason (a TrainingRun never borrows the operator's rights);
- a `view` user lists runs (`kubectl get ktr`) but cannot patch one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import STANDIN_IMAGE, wait_for
from tests.integration.deployables_support import render, workspace

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "kto.dev", "v1alpha1", "trainingruns"
SMALL = {"limits": {"cpu": "500m", "memory": "512Mi"}}


def _bind(bed: Any, namespace: str, user: str, cluster_role: str) -> None:
    client.RbacAuthorizationV1Api(bed.api()).create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{user}-{cluster_role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


def _as(bed: Any, user: str, *args: str, input: str | None = None) -> Any:
    return bed.kubectl(f"--as={user}", *args, check=False, input=input)


def _run(name: str, **spec: Any) -> str:
    return json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name},
                       "spec": {"image": STANDIN_IMAGE, "experiment": f"users-{name}", **spec}})


def _status(bed: Any, ns: str, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(bed.api()).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return dict(obj.get("status") or {})


@pytest.fixture
def users(bed: Any, openshift_namespace: str) -> dict[str, str]:
    bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / "crds"))
    for crd in ("trainingruns.kto.dev", "powerschedules.kto.dev"):
        bed.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    suffix = uuid.uuid4().hex[:6]
    names = {"admin": f"ann-{suffix}", "edit": f"alice-{suffix}", "view": f"victor-{suffix}"}
    for role, user in names.items():
        _bind(bed, openshift_namespace, user, role)
    return names


def test_namespace_users_install_run_cancel_and_view(bed: Any, openshift_namespace: str, users: dict[str, str],
                                                     tmp_path: Path) -> None:
    ns, admin, edit, view = openshift_namespace, users["admin"], users["edit"], users["view"]
    wait_for(lambda: _as(bed, edit, "auth", "can-i", "create", "trainingruns.kto.dev", "-n", ns).returncode == 0,
             30, "kto-edit aggregated into edit")

    # The namespace admin installs the operator as shipped (only the MLflow URL is the bed's).
    docs = render(bed, workspace(bed.repo, tmp_path / "ws"), "operator")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"].update(KTO_MLFLOW_TRACKING_URI=bed.env["MLFLOW_TRACKING_URI"])
    refused = _as(bed, edit, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    assert refused.returncode != 0 and "roles.rbac.authorization.k8s.io" in refused.stderr, refused.stderr
    applied = _as(bed, admin, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    apps = client.AppsV1Api(bed.api())
    try:
        wait_for(lambda: (apps.read_namespaced_deployment("kto-operator", ns).status.ready_replicas or 0) == 1,
                 120, "operator Deployment Ready")

        # The edit user: a run, cancelled once it trains; a run asking for the operator's ServiceAccount.
        assert _as(bed, edit, "create", "-n", ns, "-f", "-",
                   input=_run("long", parameters={"epochs": 100, "sleep": 1.0}, resources=SMALL)).returncode == 0
        assert _as(bed, edit, "create", "-n", ns, "-f", "-",
                   input=_run("borrow", serviceAccountName="kto-operator", resources=SMALL)).returncode == 0
        wait_for(lambda: _status(bed, ns, "long").get("phase") == "Running", 120,
                 f"run Running (now {_status(bed, ns, 'long')})")

        # The view user sees the runs and cannot cancel them.
        listed = _as(bed, view, "get", "ktr", "-n", ns, "-o", "name")
        assert listed.returncode == 0 and "trainingrun.kto.dev/long" in listed.stdout.split(), listed
        cancel = ["patch", "ktr", "long", "-n", ns, "--type=merge", "-p", '{"spec": {"cancel": true}}']
        denied = _as(bed, view, *cancel)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
        assert _status(bed, ns, "long").get("phase") == "Running"

        assert _as(bed, edit, *cancel).returncode == 0
        final = wait_for(lambda: (s := _status(bed, ns, "long")).get("phase") in ("Cancelled", "Failed", "Succeeded")
                         and s, 90, "run Cancelled")
        assert final["phase"] == "Cancelled", final

        borrowed = wait_for(lambda: (s := _status(bed, ns, "borrow")).get("phase") == "Failed" and s, 60,
                            f"the borrowing run Failed (now {_status(bed, ns, 'borrow')})")
        assert borrowed["reason"] == "InvalidSpec", borrowed
        assert "kto-operator is the operator's own" in borrowed["message"], borrowed
        assert not [j for j in client.BatchV1Api(bed.api()).list_namespaced_job(ns).items
                    if j.metadata.name.startswith("borrow")], "a Job was created for the borrowing run"
    finally:
        for name in ("long", "borrow"):
            _as(bed, edit, "delete", "ktr", name, "-n", ns, "--wait=false")
        wait_for(lambda: not client.CustomObjectsApi(bed.api()).list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL)["items"], 60, "runs deleted by the operator's finalizer")
