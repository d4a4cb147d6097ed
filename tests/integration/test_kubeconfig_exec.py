"""`python -m kto_operator` with a kubeconfig whose user is an exec plugin (client.authentication.k8s.io), as
cloud clusters hand them out: the plugin prints an ExecCredential with a TokenRequest token of the operator's
ServiceAccount, and both kopf's watches and the operator's own calls (kto_operator.api) authenticate with it.
Then the same operator under an API priority level that rejects it (429) whenever it has more than its few
seats in flight: its requests are sent again after Retry-After and every run still gets its Job."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import STANDIN_IMAGE, wait_for
from tests.integration.test_deployables_rbac import REFUSED, TokenOperator, rbac_ns  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

GROUP, VERSION = "kto.dev", "v1alpha1"
SERVICE_ACCOUNT = "kto-operator"
PLUGIN = """import json, pathlib, sys
token_file, calls = sys.argv[1], pathlib.Path(sys.argv[2])
with calls.open("a") as f:
    f.write("called\\n")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": pathlib.Path(token_file).read_text().strip()}}))
"""


def exec_kubeconfig(bed: Any, namespace: str, work: Path) -> tuple[Path, Path]:
    """A kubeconfig whose only credential is an exec plugin printing the ServiceAccount's token; the file
    that counts the plugin's runs."""
    token = client.CoreV1Api(bed.api()).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    (work / "token").write_text(token)
    (work / "plugin.py").write_text(PLUGIN)
    calls = work / "calls"
    admin = yaml.safe_load(bed.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(cluster.pop("certificate-authority")).read_bytes()).decode()
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                     "args": [str(work / "plugin.py"), str(work / "token"), str(calls)],
                     "interactiveMode": "Never"}}
    path = work / "exec.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "bed", "cluster": cluster}], "users": [{"name": "plugin", "user": user}],
        "contexts": [{"name": "exec", "context": {"cluster": "bed", "user": "plugin", "namespace": namespace}}]}))
    path.chmod(0o600)
    return path, calls


def _custom(bed: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(bed.api())


def submit(bed: Any, namespace: str, name: str) -> None:
    _custom(bed).create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingRun", "metadata": {"name": name},
        "spec": {"image": STANDIN_IMAGE, "experiment": f"exec-{namespace}", "parameters": {"epochs": 1, "sleep": 0.1},
                 "resources": {"limits": {"cpu": "250m", "memory": "256Mi"}}}})


def run_status(bed: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = _custom(bed).get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", name)
    return dict(obj.get("status") or {})


def job_of(bed: Any, namespace: str, name: str) -> client.V1Job | None:
    jobs = client.BatchV1Api(bed.api()).list_namespaced_job(namespace).items
    return next((j for j in jobs if (j.metadata.annotations or {}).get("kto.dev/trainingrun-name") == name), None)


def drain(bed: Any, namespace: str, names: list[str]) -> None:
    for name in names:
        _custom(bed).delete_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruns", name)
    wait_for(lambda: not _custom(bed).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                    "trainingruns")["items"], 60, "runs deleted")


def test_operator_logs_in_through_an_exec_plugin(bed: Any, rbac_ns: str, tmp_path: Path) -> None:  # noqa: F811
    kubeconfig, calls = exec_kubeconfig(bed, rbac_ns, tmp_path)
    op = TokenOperator(bed, rbac_ns, kubeconfig, tmp_path / "operator.log")
    op.start()
    try:
        submit(bed, rbac_ns, "exec-run")
        job = wait_for(lambda: job_of(bed, rbac_ns, "exec-run"), 60, f"the run's Job\n{op.log()[-3000:]}")
        assert job.metadata.owner_references[0].kind == "TrainingRun"
        status = wait_for(lambda: (s := run_status(bed, rbac_ns, "exec-run")).get("phase") in
                          ("Succeeded", "Failed") and s, 120, f"run finished\n{op.log()[-3000:]}")
        assert status["phase"] == "Succeeded", status
        drain(bed, rbac_ns, ["exec-run"])  # the finalizer, through the plugin's token too
    finally:
        op.stop()
        print(f"---- operator log ({rbac_ns}) ----\n{op.log()[-20000:]}")
    # kopf's login and the operator's client each ran the plugin: no other credential was there.
    assert len(calls.read_text().splitlines()) >= 2
    refused = [line for line in op.log().splitlines() if REFUSED.search(line) or " 401 " in line]
    assert not refused, "\n".join(refused[:20])


def throttle(bed: Any, namespace: str, name: str) -> None:
    """A priority level of one concurrency share that rejects (429) rather than queues, for the operator's
    ServiceAccount alone."""
    level = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
             "metadata": {"name": name}, "spec": {"type": "Limited", "limited": {
                 "nominalConcurrencyShares": 1, "lendablePercent": 0, "limitResponse": {"type": "Reject"}}}}
    schema = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": name},
              "spec": {"priorityLevelConfiguration": {"name": name}, "matchingPrecedence": 500,
                       "distinguisherMethod": {"type": "ByUser"}, "rules": [{
                           "subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                               "name": SERVICE_ACCOUNT, "namespace": namespace}}],
                           "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                              "namespaces": ["*"], "clusterScope": True}],
                           "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}
    bed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([level, schema]))


def rejected(bed: Any, name: str) -> float:
    """apiserver_flowcontrol_rejected_requests_total of priority level `name` (the API server's own count)."""
    raw = bed.kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in raw.splitlines()
               if line.startswith("apiserver_flowcontrol_rejected_requests_total{") and
               f'priority_level="{name}"' in line)


def test_throttled_requests_are_sent_again_after_retry_after(bed: Any, rbac_ns: str,  # noqa: F811
                                                             tmp_path: Path) -> None:
    name = f"kto-throttle-{rbac_ns}"[:63]
    kubeconfig, _ = exec_kubeconfig(bed, rbac_ns, tmp_path)
    throttle(bed, rbac_ns, name)
    op = TokenOperator(bed, rbac_ns, kubeconfig, tmp_path / "operator.log")
    runs = [f"burst-{i}" for i in range(30)]
    try:
        op.start()
        for run in runs:  # a burst: the operator starts them all at once, far over its seats
            submit(bed, rbac_ns, run)
        wait_for(lambda: all(job_of(bed, rbac_ns, r) for r in runs), 180, f"a Job per run\n{op.log()[-3000:]}")
        assert rejected(bed, name) > 0, "the API server never throttled the operator: the test proved nothing"
        drain(bed, rbac_ns, runs)
    finally:
        op.stop()
        bed.kubectl("delete", "flowschema", name, "--ignore-not-found")
        bed.kubectl("delete", "prioritylevelconfiguration", name, "--ignore-not-found")
        print(f"---- operator log ({rbac_ns}) ----\n{op.log()[-20000:]}")
    # Every 429 was absorbed by the client's retries: no handler failed on one (api.ApiError's own words).
    failed = [line for line in op.log().splitlines() if "429 Too Many Requests" in line]
    assert not failed, failed[:10]


def test_the_plugin_is_accepted_by_kubectl(bed: Any, rbac_ns: str, tmp_path: Path) -> None:  # noqa: F811
    """The kubeconfig itself, read by client-go: the plugin's credential is the ServiceAccount's."""
    kubeconfig, calls = exec_kubeconfig(bed, rbac_ns, tmp_path)
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=60)
    user = json.loads(out.stdout)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{rbac_ns}:{SERVICE_ACCOUNT}"
    assert calls.read_text().splitlines() == ["called"]
