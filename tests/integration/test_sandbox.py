"""Sandbox mode on the bed, as a Developer Sandbox user: an `edit`-only user (impersonated with kubectl
--as, or logged in with a client certificate of their own) in an OpenShift-like namespace with the Sandbox's
ResourceQuotas and LimitRange (codeready-toolchain's base1ns tier), nothing of kto.dev used anywhere.

- what `edit` may and may not do, by the API server's real RBAC (Roles: only with the Sandbox's extra
  `rbac-edit` Role, and only with rights the user holds);
- the ON/OFF switch without a CRD: manifests/sandbox/power's CronJobs (the schedule), `kubectl create job
  --from=cronjob/...` (the button), a sleep that waits for a running training, exact replicas restored;
- the platform, one training from the Job template tied to its MLflow run, and the button run from the
  user's own machine with their own login."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import sleep_command, wait_for
from tests.integration.deployables_support import of_kind, render, workspace

pytestmark = pytest.mark.integration

USER = "sandbox-user"
AS_USER = (f"--as={USER}", "--as-group=system:authenticated")
PART_OF = {"app.kubernetes.io/part-of": "kto-mlflow"}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
# The Developer Sandbox's namespace template (codeready-toolchain host-operator, tier base1ns, ns_dev.yaml):
# quotas for long-running pods (NotTerminating) and for pods with a deadline (Terminating), storage, and a
# LimitRange whose defaults apply to containers without resources. The cluster-wide counts of its
# ClusterResourceQuotas (30 Jobs, 30 Deployments, 50 pods, ...) as a namespaced quota.
SANDBOX_QUOTAS = {
    "compute-deploy": {"scopes": ["NotTerminating"], "hard": {
        "limits.cpu": "20", "limits.memory": "14Gi", "requests.cpu": "1750m", "requests.memory": "14Gi"}},
    "compute-build": {"scopes": ["Terminating"], "hard": {
        "limits.cpu": "20", "limits.memory": "10Gi", "requests.cpu": "2", "requests.memory": "10Gi"}},
    "storage": {"hard": {"limits.ephemeral-storage": "15Gi", "requests.storage": "15Gi",
                         "requests.ephemeral-storage": "15Gi", "count/persistentvolumeclaims": "5"}},
    "counts": {"hard": {"count/deployments.apps": "30", "count/pods": "50", "count/jobs.batch": "30",
                        "count/cronjobs.batch": "30", "count/statefulsets.apps": "30", "count/configmaps": "100",
                        "count/secrets": "100"}},
}
SANDBOX_LIMITS = {"type": "Container", "default": {"cpu": "1000m", "memory": "1000Mi"},
                  "defaultRequest": {"cpu": "10m", "memory": "64Mi"}}
# The Sandbox's extra Role for its users (tier base1ns, spacerole_admin.yaml): Roles and RoleBindings.
RBAC_EDIT = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}


def as_user(bed: Any, *args: str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return bed.kubectl(*AS_USER, *args, check=check, input=input, timeout=timeout)


def can(bed: Any, ns: str, verb: str, resource: str, *who: str) -> bool:
    out = bed.kubectl("auth", "can-i", verb, resource, "-n", ns, *(who or AS_USER), check=False)
    return out.stdout.strip() == "yes"


@pytest.fixture
def sandbox(bed: Any, openshift_namespace: str) -> str:
    """An OpenShift-like namespace (arbitrary UIDs, `restricted`) with the Sandbox's quotas and LimitRange,
    where USER holds the built-in `edit` ClusterRole and nothing else."""
    ns = openshift_namespace
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": spec}
        for name, spec in SANDBOX_QUOTAS.items()]
    docs.append({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "resource-limits"},
                 "spec": {"limits": [SANDBOX_LIMITS]}})
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"{USER}-edit"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]})
    bed.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
    return ns


def grant_rbac_edit(bed: Any, ns: str) -> None:
    """What the Developer Sandbox gives its users on top of `edit` (done by the cluster, not the user)."""
    docs = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "rbac-edit"},
             "rules": [RBAC_EDIT]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": f"{USER}-rbac-edit"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rbac-edit"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]}]
    bed.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def power_docs(bed: Any, tmp_path: Path) -> list[dict[str, Any]]:
    return render(bed, workspace(bed.repo, tmp_path / "ws"), "sandbox/power")


def sleeper(name: str, replicas: int, labels: dict[str, str], kind: str = "Deployment") -> dict[str, Any]:
    """A workload of python:3.11-slim sleepers, restricted, no resources (the LimitRange's defaults apply)."""
    template = {"metadata": {"labels": {"app": name, **labels}}, "spec": {
        "securityContext": RESTRICTED_POD, "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "main", "image": "python:3.11-slim", "command": sleep_command(1e6),
                        "securityContext": RESTRICTED_CONTAINER}]}}
    spec: dict[str, Any] = {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": spec}


def cronjob(name: str, labels: dict[str, str]) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "securityContext": RESTRICTED_POD, "containers": [
        {"name": "main", "image": "python:3.11-slim", "command": ["true"], "securityContext": RESTRICTED_CONTAINER}]}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "labels": labels},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": pod}}}}}


def state(bed: Any, ns: str) -> dict[str, Any]:
    """Replica counts (Deployments, StatefulSets) and suspend flags (CronJobs) of the namespace."""
    apps, batch = client.AppsV1Api(bed.api()), client.BatchV1Api(bed.api())
    out: dict[str, Any] = {f"deployment/{d.metadata.name}": d.spec.replicas
                           for d in apps.list_namespaced_deployment(ns).items}
    out |= {f"statefulset/{s.metadata.name}": s.spec.replicas for s in apps.list_namespaced_stateful_set(ns).items}
    out |= {f"cronjob/{c.metadata.name}": bool(c.spec.suspend) for c in batch.list_namespaced_cron_job(ns).items}
    return out


def all_ready(bed: Any, ns: str) -> bool:
    apps = client.AppsV1Api(bed.api())
    sets = apps.list_namespaced_deployment(ns).items + apps.list_namespaced_stateful_set(ns).items
    return all((s.status.ready_replicas or 0) >= (s.spec.replicas or 0) for s in sets)


def record(bed: Any, ns: str) -> dict[str, str]:
    return dict(client.CoreV1Api(bed.api()).read_namespaced_config_map("kto-power", ns).data or {})


def job_outcome(bed: Any, ns: str, name: str) -> str | None:
    try:
        job = client.BatchV1Api(bed.api()).read_namespaced_job(name, ns)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    return next((c.type for c in job.status.conditions or [] if c.status == "True" and c.type in
                 ("Complete", "Failed")), None)


def job_logs(bed: Any, ns: str, selector: str) -> str:
    return bed.kubectl("logs", "-n", ns, "-l", selector, "--tail=100", "--prefix", check=False).stdout


# 1. Rights -----------------------------------------------------------------------------------------------------
def test_what_an_edit_user_may_do(bed: Any, sandbox: str, tmp_path: Path) -> None:
    ns = sandbox
    for verb, resource in [("create", "deployments.apps"), ("patch", "deployments.apps"),
                           ("patch", "statefulsets.apps"), ("create", "cronjobs.batch"), ("create", "jobs.batch"),
                           ("create", "configmaps"), ("create", "secrets"), ("create", "serviceaccounts"),
                           ("create", "persistentvolumeclaims"), ("create", "services")]:
        assert can(bed, ns, verb, resource), f"edit cannot {verb} {resource}"
    for verb, resource in [("create", "roles.rbac.authorization.k8s.io"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"),
                           ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                           ("patch", "resourcequotas"), ("patch", "limitranges"), ("create", "namespaces")]:
        assert not can(bed, ns, verb, resource), f"edit may {verb} {resource}"

    # manifests/sandbox/power with `edit` alone: the ServiceAccount and CronJobs go in, the Role does not.
    docs = power_docs(bed, tmp_path)
    applied = as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert applied.returncode != 0
    # (`edit` may not even read Roles: kubectl apply is refused at its first look.)
    for kind in ("roles", "rolebindings"):
        assert f'{kind}.rbac.authorization.k8s.io "kto-power" is forbidden: User "{USER}"' in applied.stderr, \
            applied.stderr
    assert "serviceaccount/kto-power created" in applied.stdout and "cronjob.batch/kto-power-on created" in \
        applied.stdout, applied.stdout


def test_sandbox_user_grants_the_power_role_and_nothing_more(bed: Any, sandbox: str, tmp_path: Path) -> None:
    ns = sandbox
    grant_rbac_edit(bed, ns)
    applied = as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(power_docs(bed, tmp_path)),
                      check=False)
    assert applied.returncode == 0, applied.stderr
    # Escalation prevention: a Role with a right `edit` lacks is refused, even to a user who may create Roles.
    wider = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "wider"},
             "rules": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["patch"]}]}
    refused = as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(wider), check=False)
    assert refused.returncode != 0 and "attempting to grant RBAC permissions not currently held" in refused.stderr
    # The switch's ServiceAccount: exactly its rights, nothing of kto.dev.
    sa = (f"--as=system:serviceaccount:{ns}:kto-power",)
    assert can(bed, ns, "patch", "deployments.apps", *sa) and can(bed, ns, "list", "jobs.batch", *sa)
    assert not can(bed, ns, "create", "deployments.apps", *sa) and not can(bed, ns, "get", "secrets", *sa)
    assert not can(bed, ns, "list", "trainingruns.kto.dev", *sa)
    assert not can(bed, ns, "list", "powerschedules.kto.dev", *sa)


# 2. The switch by CronJob and button ----------------------------------------------------------------------------
def test_power_switch_by_schedule_and_button(bed: Any, sandbox: str, tmp_path: Path) -> None:
    ns = sandbox
    grant_rbac_edit(bed, ns)
    workloads = [sleeper("web", 2, PART_OF), sleeper("db", 1, PART_OF, "StatefulSet"),
                 sleeper("mine", 1, {"app": "mine"}), cronjob("nightly", PART_OF)]
    as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(workloads))
    as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(power_docs(bed, tmp_path)))
    wait_for(lambda: all_ready(bed, ns), 120, "sleepers Ready")
    awake = state(bed, ns)
    assert awake == {"deployment/web": 2, "deployment/mine": 1, "statefulset/db": 1, "cronjob/nightly": False,
                     "cronjob/kto-power-on": False, "cronjob/kto-power-off": False}
    power_jobs = "app.kubernetes.io/name=kto-power"
    try:
        # The schedule: the off CronJob made to fire at the next minute, then set back.
        as_user(bed, "patch", "-n", ns, "cronjob/kto-power-off", "--type=merge", "-p",
                '{"spec":{"schedule":"* * * * *"}}')
        batch = client.BatchV1Api(bed.api())
        first = wait_for(lambda: batch.list_namespaced_job(ns, label_selector=power_jobs).items, 100,
                         "the off CronJob's first Job")[0].metadata.name
        as_user(bed, "patch", "-n", ns, "cronjob/kto-power-off", "--type=merge", "-p",
                '{"spec":{"schedule":"0 19 * * *"}}')
        assert wait_for(lambda: job_outcome(bed, ns, first), 120, "the off Job finished") == "Complete"
        asleep = state(bed, ns)
        assert asleep == {**awake, "deployment/web": 0, "statefulset/db": 0, "cronjob/nightly": True}
        rec = record(bed, ns)
        assert rec["state"] == "Off" and json.loads(rec["awake"]) == {"Deployment/web": 2, "StatefulSet/db": 1}

        # The button: a Job from the on CronJob, created by the user.
        as_user(bed, "create", "job", "-n", ns, "--from=cronjob/kto-power-on", "power-on-now")
        assert wait_for(lambda: job_outcome(bed, ns, "power-on-now"), 180, "the on Job finished") == "Complete"
        assert state(bed, ns) == awake
        assert record(bed, ns)["state"] == "On"
        wait_for(lambda: all_ready(bed, ns), 120, "sleepers Ready again")

        # A sleep under a running training waits for it (the button's off Job), then sleeps.
        trainer = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": "training", "labels": {"app.kubernetes.io/component": "trainer"}}, "spec": {
            "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "securityContext": RESTRICTED_POD, "activeDeadlineSeconds": 600,
                "containers": [{"name": "t", "image": "python:3.11-slim", "command": sleep_command(600),
                                "securityContext": RESTRICTED_CONTAINER}]}}}}
        as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(trainer))
        as_user(bed, "create", "job", "-n", ns, "--from=cronjob/kto-power-off", "power-off-now")
        wait_for(lambda: "training Jobs running: training" in job_logs(bed, ns, "job-name=power-off-now"), 90,
                 "the off Job waiting for the training")
        assert state(bed, ns) == awake
        as_user(bed, "delete", "job", "-n", ns, "training", "--wait=false")
        assert wait_for(lambda: job_outcome(bed, ns, "power-off-now"), 120, "the off Job finished") == "Complete"
        assert state(bed, ns) == asleep
    finally:
        print(job_logs(bed, ns, power_jobs))
    assert "forbidden" not in job_logs(bed, ns, power_jobs).lower()


# 3. Platform, training Job, button from the user's machine -----------------------------------------------------
def user_kubeconfig(bed: Any, path: Path) -> Path:
    """USER's own login: a client certificate from the API's CertificateSigningRequest (the kube-apiserver-client
    signer), the way an administrator hands a user credentials; the command reads it as any kubeconfig."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, USER)])).sign(key, hashes.SHA256())
    name = f"{USER}-{uuid.uuid4().hex[:8]}"
    bed.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
        "spec": {"request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                 "signerName": "kubernetes.io/kube-apiserver-client", "expirationSeconds": 3600,
                 "usages": ["client auth"]}}))
    try:
        bed.kubectl("certificate", "approve", name)
        cert = wait_for(lambda: bed.kubectl("get", "csr", name, "-o", "jsonpath={.status.certificate}").stdout,
                        60, "the signed certificate")
    finally:
        bed.kubectl("delete", "csr", name, check=False)
    admin = yaml.safe_load(bed.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(cluster.pop("certificate-authority")).read_bytes()).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": USER,
        "clusters": [{"name": "bed", "cluster": cluster}],
        "users": [{"name": USER, "user": {"client-certificate-data": cert,
                                          "client-key-data": base64.b64encode(key_pem).decode()}}],
        "contexts": [{"name": USER, "context": {"cluster": "bed", "user": USER}}]}))
    path.chmod(0o600)
    return path


def switch_as_user(bed: Any, kubeconfig: Path, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": bed.env["PATH"], "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    return subprocess.run([sys.executable, "-m", "kto_operator.power", "-n", ns, *args], env=env, text=True,
                          capture_output=True, timeout=900, cwd=bed.repo)


@contextlib.contextmanager
def port_forward(bed: Any, ns: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` as the user (`edit` may): how a Sandbox user without Routes reaches a Service
    from their machine. Yields http://127.0.0.1:<local port>."""
    env = {**os.environ, **bed.env}
    proc = subprocess.Popen(["kubectl", *AS_USER, "port-forward", "-n", ns, target, f":{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "Forwarding from 127.0.0.1:43215 -> 9000"
        found = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert found, first + (proc.stdout.read() if proc.poll() is not None else "")
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        proc.terminate()
        proc.wait(10)


def training_overlay(bed: Any, tmp_path: Path, experiment: str) -> Path:
    """The user's overlay of manifests/sandbox/training: a tiny dataset and model (the bed has 2 CPUs, no
    ImageNet weights), a smaller CPU request on the shared node; everything else as shipped."""
    manifests = workspace(bed.repo, tmp_path / "ws")
    overlay = manifests / "mine"
    overlay.mkdir()
    args = ["--bucket=cats-dogs-other", "--epochs=1", "--image_size=32", "--batch_size=8", "--weights=none"]
    patch = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "cats-dogs-other-1"}, "spec": {
        "template": {"spec": {"containers": [{
            "name": "trainer", "args": args, "env": [{"name": "MLFLOW_EXPERIMENT_NAME", "value": experiment}],
            "resources": {"requests": {"cpu": "100m"}}}]}}}}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../sandbox/training"], "patches": [{"patch": yaml.safe_dump(patch)}]}))
    return overlay


def test_platform_training_and_button_as_an_edit_user(bed: Any, sandbox: str, tmp_path: Path) -> None:
    import boto3
    import mlflow
    from kto_trainer.dataset_tool import upload_dataset
    from kto_trainer.datasets import synthetic_images

    ns = sandbox
    core = client.CoreV1Api(bed.api())
    # (a) The platform, applied by the user (manifests/platform/bed: the OpenShift overlay minus its Routes).
    manifests = workspace(bed.repo, tmp_path / "platform")
    secrets = dict(line.split("=", 1) for line in (manifests / "platform/secrets/secrets.env").read_text()
                   .splitlines() if line and not line.startswith("#"))
    docs = render(bed, manifests, "platform/bed")
    applied = as_user(bed, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert applied.returncode == 0, applied.stderr
    platform = {f"{d['kind'].lower()}/{d['metadata']['name']}": d["spec"].get("replicas", 1)
                for d in of_kind(docs, "Deployment", "StatefulSet")}
    wait_for(lambda: all_ready(bed, ns) and len(state(bed, ns)) == len(platform), 300, "platform Ready", interval=1)
    assert state(bed, ns) == platform

    # The dataset, through the namespace's own MinIO (the course's bucket), reached by port-forward, uploaded
    # as MinIO's root user (the trainers' AWS_* keys only read the dataset).
    with port_forward(bed, ns, "svc/minio", 9000) as minio:
        s3 = boto3.client("s3", endpoint_url=minio, region_name="us-east-1",
                          aws_access_key_id=secrets.get("MINIO_ROOT_USER", secrets["AWS_ACCESS_KEY_ID"]),
                          aws_secret_access_key=secrets.get("MINIO_ROOT_PASSWORD", secrets["AWS_SECRET_ACCESS_KEY"]))
        upload_dataset(s3, "cats-dogs-other", synthetic_images(15, 32, seed=4), workers=4)

    # (c) One training from the Job template, created by the user; the trainer creates its MLflow run.
    experiment = f"sandbox-{uuid.uuid4().hex[:6]}"
    created = as_user(bed, "create", "-n", ns, "-k", str(training_overlay(bed, tmp_path, experiment)), check=False)
    assert created.returncode == 0, created.stderr
    quota = core.read_namespaced_resource_quota
    # Its pod has a deadline: the Sandbox counts it in the short-lived quota, not in the platform's.
    wait_for(lambda: quota("compute-build", ns).status.used.get("requests.memory") not in (None, "0"), 60,
             "the trainer pod in compute-build")
    outcome = wait_for(lambda: job_outcome(bed, ns, "cats-dogs-other-1"), 480, "the training Job finished")
    logs = bed.kubectl("logs", "-n", ns, "job/cats-dogs-other-1", "--tail=30", check=False).stdout
    assert outcome == "Complete", logs
    (pod,) = core.list_namespaced_pod(ns, label_selector="job-name=cats-dogs-other-1").items
    with port_forward(bed, ns, "svc/mlflow", 5000) as uri:
        tracking = mlflow.MlflowClient(uri)
        (run,) = tracking.search_runs([tracking.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "cats-dogs-other-1"
    assert run.data.tags["kto.dev/job"] == "cats-dogs-other-1" and run.data.tags["kto.dev/pod"] == pod.metadata.name
    assert run.data.tags["kto.dev/namespace"] == ns and "test_accuracy" in run.data.metrics

    # (b) The button from the user's own machine, with `edit` alone (no Role, no ServiceAccount, no CronJob).
    kubeconfig = user_kubeconfig(bed, tmp_path / "user" / "kubeconfig")
    assert bed.kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", "create", "roles", "-n", ns,
                       check=False).stdout.strip() == "no"
    as_user(bed, "scale", "-n", ns, "deployment/minio", "--replicas=2")  # not 1: the exact count comes back
    wait_for(lambda: all_ready(bed, ns), 120, "minio at 2")
    awake = state(bed, ns)
    off = switch_as_user(bed, kubeconfig, ns, "--state=off", "--selector=app.kubernetes.io/part-of=kto-mlflow")
    assert off.returncode == 0, off.stdout + off.stderr
    assert state(bed, ns) == dict.fromkeys(platform, 0)
    wait_for(lambda: not [p for p in core.list_namespaced_pod(ns).items if p.status.phase in ("Pending", "Running")],
             120, "platform pods gone")
    on = switch_as_user(bed, kubeconfig, ns, "--state=on", "--selector=app.kubernetes.io/part-of=kto-mlflow")
    assert on.returncode == 0, on.stdout + on.stderr
    assert state(bed, ns) == awake and all_ready(bed, ns)  # the command returns once every group is Ready
    with port_forward(bed, ns, "svc/mlflow", 5000) as uri:  # a new MLflow pod, the run kept in MySQL
        assert mlflow.MlflowClient(uri).get_run(run.info.run_id).info.status == "FINISHED"
    print(off.stdout + on.stdout)

