"""The deployables against the bed's real kube-apiserver: every kustomization passes a server-side dry run,
every pod they (and the operator's Job builder) define is admitted by the real PodSecurity admission of a
namespace enforcing `restricted` (with negative controls that it does enforce), and the manifests keep the
rules of issue 6: namespaced rights only, exact Role, no fixed UIDs, no secrets in git."""

from __future__ import annotations

import json
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.deployables_support import (
    ENTRIES,
    WORKLOAD_KINDS,
    label_restricted,
    of_kind,
    pod_from,
    render,
    workspace,
)

pytestmark = pytest.mark.integration

NAMESPACED_ENTRIES = tuple(e for e in ENTRIES if e != "crds")
# The one fixed UID: MinIO's image runs as root, so plain Kubernetes (not OpenShift) needs one (see
# manifests/platform/kustomization.yaml). Everything else runs under the image's or the cluster's UID.
FIXED_UID_ALLOWED = {("platform", "minio")}
EXPECTED_RULES = [
    (("kto.dev",), ("trainingruns",), ("get", "list", "watch", "patch")),
    (("kto.dev",), ("trainingruns/status",), ("patch",)),
    (("kto.dev",), ("trainingruns/finalizers",), ("update",)),
    (("kto.dev",), ("powerschedules",), ("get", "list", "watch", "patch")),
    (("kto.dev",), ("powerschedules/status",), ("patch",)),
    (("batch",), ("jobs",), ("get", "list", "watch", "create", "delete")),
    (("",), ("services",), ("get", "create")),
    (("",), ("pods",), ("list", "watch")),
    (("",), ("events",), ("create", "list")),
    (("apps",), ("deployments", "statefulsets"), ("get", "list", "patch")),
    (("batch",), ("cronjobs",), ("get", "list", "patch")),
]


def _version(project: str, repo: Path) -> str:
    return str(tomllib.loads((repo / project / "pyproject.toml").read_text())["project"]["version"])


@pytest.fixture(scope="module")
def crds(bed: Any) -> None:
    bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bed.repo / "crds"))
    for name in ("trainingruns.kto.dev", "powerschedules.kto.dev"):
        bed.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="module")
def manifests(bed: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return workspace(bed.repo, tmp_path_factory.mktemp("deployables"))


@pytest.fixture(scope="module")
def rendered(bed: Any, manifests: Path) -> dict[str, list[dict[str, Any]]]:
    return {entry: render(bed, manifests, entry) for entry in ENTRIES}


@pytest.fixture(scope="module")
def restricted_ns(bed: Any) -> Iterator[str]:
    """One namespace enforcing Pod Security `restricted` for the module (dry runs leave nothing in it)."""
    name = f"t-pss-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(bed.api())
    core.create_namespace({"metadata": {"name": name, "labels": {"kto.dev/test": "true"}}})
    label_restricted(bed, name)
    # Pods naming a ServiceAccount are admitted only when it exists.
    core.create_namespaced_service_account(name, {"metadata": {"name": "kto-operator"}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


# --- kustomize + server dry run ---------------------------------------------------------------------
def test_crds_kustomization_lists_every_crd(bed: Any, rendered: dict[str, list[dict[str, Any]]]) -> None:
    listed = yaml.safe_load((bed.repo / "crds/Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (bed.repo / "crds").glob("*.yaml"))
    names = {d["metadata"]["name"] for p in (bed.repo / "crds").glob("*.yaml")
             for d in yaml.safe_load_all(p.read_text())}
    assert {d["metadata"]["name"] for d in rendered["crds"]} == names
    assert {d["kind"] for d in rendered["crds"]} == {"CustomResourceDefinition", "ClusterRole"}


def test_crds_pass_server_side_dry_run(bed: Any, manifests: Path, crds: None) -> None:
    out = bed.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k",
                      str(manifests / "crds"))
    assert out.stdout.count("serverside-applied (server dry run)") == 4, out.stdout  # 2 CRDs, 2 ClusterRoles


@pytest.mark.parametrize("entry", NAMESPACED_ENTRIES)
def test_kustomization_passes_server_dry_run_in_a_restricted_namespace(
        bed: Any, manifests: Path, entry: str, crds: None, restricted_ns: str,
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    if entry == "platform/openshift":
        # The bed has no route.openshift.io API: everything else of the overlay goes to the server,
        # the Routes are checked against the rendered Services in test_openshift_routes.
        docs = [d for d in rendered[entry] if d["kind"] != "Route"]
        result = bed.kubectl("apply", "--dry-run=server", "-n", restricted_ns, "-f", "-",
                             input=yaml.safe_dump_all(docs), check=False)
    else:
        result = bed.kubectl("apply", "--dry-run=server", "-n", restricted_ns, "-k", str(manifests / entry),
                             check=False)
    assert result.returncode == 0, result.stderr
    expected = len([d for d in rendered[entry] if d["kind"] != "Route"])
    assert result.stdout.count("(server dry run)") == expected, result.stdout
    # warn=restricted on the namespace: a workload template that would violate it shows up here.
    assert "PodSecurity" not in result.stderr, result.stderr


def test_openshift_routes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["platform/openshift"]
    services = {s["metadata"]["name"]: {p["name"] for p in s["spec"]["ports"]} for s in of_kind(docs, "Service")}
    routes = of_kind(docs, "Route")
    # No MinIO console: an internet-facing admin page of MinIO's root user.
    assert {r["metadata"]["name"] for r in routes} == {"mlflow", "minio"}
    for route in routes:
        spec = route["spec"]
        assert route["apiVersion"] == "route.openshift.io/v1"
        assert spec["to"]["kind"] == "Service" and spec["port"]["targetPort"] in services[spec["to"]["name"]]
        assert spec["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
        assert "host" not in spec  # the router picks <name>-<namespace>.<apps domain>
    # Exposed MLflow asks for a login, and answers its Route's host.
    mlflow = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "mlflow")
    assert "--app-name=basic-auth" in mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    config = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("kto-platform-config"))
    assert "mlflow-*" in config["data"]["KTO_MLFLOW_ALLOWED_HOSTS"].split(",")


# --- Pod Security admission (enforce=restricted) ----------------------------------------------------
def _admit(bed: Any, namespace: str, pod: dict[str, Any]) -> str | None:
    """None when the pod is admitted (dry run: nothing is created), else the API's message."""
    try:
        client.CoreV1Api(bed.api()).create_namespaced_pod(namespace, pod, dry_run="All")
        return None
    except ApiException as err:
        return f"{err.status}: {json.loads(err.body or '{}').get('message', err.body)}"


def _all_pods(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for entry in NAMESPACED_ENTRIES:
        for workload in of_kind(rendered[entry], *WORKLOAD_KINDS):
            pods.append((f"{entry}:{workload['kind']}/{workload['metadata']['name']}", pod_from(workload)))
    return pods


def test_negative_controls_restricted_is_enforced(bed: Any, restricted_ns: str) -> None:
    """A privileged pod, and a plain pod that `baseline` allows (no seccomp, capabilities kept), are both
    refused: the namespace really enforces `restricted`, so the admissions below mean something."""
    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"},
                  "spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                           "securityContext": {"privileged": True}}]}}
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}
    for pod in (privileged, plain):
        err = _admit(bed, restricted_ns, pod)
        assert err is not None and err.startswith("403: "), (pod["metadata"]["name"], err)
        assert 'violates PodSecurity "restricted:latest"' in err
        assert "seccompProfile" in err and "allowPrivilegeEscalation" in err
    assert "privileged (container" in str(_admit(bed, restricted_ns, privileged))


def test_manifest_pods_are_admitted_under_restricted(bed: Any, restricted_ns: str,
                                                     rendered: dict[str, list[dict[str, Any]]]) -> None:
    pods = _all_pods(rendered)
    assert {name.split(":")[1] for name, _ in pods} >= {
        "Deployment/kto-operator", "StatefulSet/mysql", "Deployment/minio", "Deployment/mlflow"}
    refused = {name: err for name, pod in pods if (err := _admit(bed, restricted_ns, pod))}
    assert not refused, refused


def _example_run(rendered: dict[str, list[dict[str, Any]]], namespace: str) -> dict[str, Any]:
    run = dict(of_kind(rendered["examples"], "TrainingRun")[0])
    run["metadata"] = {**run["metadata"], "namespace": namespace, "uid": str(uuid.uuid4())}
    return run


def test_operator_job_pods_are_admitted_under_restricted(bed: Any, restricted_ns: str,
                                                         rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The trainer pods the operator creates: built by its pure build_job from the example TrainingRun
    (and from a minimal one), then admitted; the Job itself passes a dry run too."""
    from kto_operator.jobs import MlflowIds, build_job
    from kto_operator.settings import OperatorSettings

    ids = MlflowIds(run_id="0" * 32, experiment_id="1", tracking_uri="http://mlflow:5000")
    minimal = {"apiVersion": "kto.dev/v1alpha1", "kind": "TrainingRun",
               "metadata": {"name": "minimal", "namespace": restricted_ns, "uid": str(uuid.uuid4())},
               "spec": {"image": "kto-standin-trainer:0.1.0", "experiment": "e"}}
    workers = {**minimal, "metadata": {**minimal["metadata"], "name": "workers"},
               "spec": {**minimal["spec"], "workers": 2}}  # an Indexed Job of 2 pods (spec.workers)
    for run in (_example_run(rendered, restricted_ns), minimal, workers):
        job = build_job(run, OperatorSettings(), ids)
        job["metadata"].pop("ownerReferences")  # the owner does not exist in this namespace
        err = _admit(bed, restricted_ns, pod_from(job, f"{job['metadata']['name']}-pod"))
        assert err is None, err
        client.BatchV1Api(bed.api()).create_namespaced_job(restricted_ns, job, dry_run="All")


# --- what the manifests must (not) contain ----------------------------------------------------------
def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_from(workload)["spec"]
    return list(spec.get("initContainers") or []) + list(spec["containers"])


@pytest.mark.parametrize("entry", NAMESPACED_ENTRIES)
def test_namespaced_rights_only(entry: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "Namespace", "CustomResourceDefinition",
                     "PersistentVolume", "StorageClass", "SecurityContextConstraints"}
    assert not [d["kind"] for d in rendered[entry] if d["kind"] in cluster_kinds]
    # No namespace in the manifests: `kubectl apply -k ... -n NS` (or oc's current project) decides.
    assert not [d["metadata"]["name"] for d in rendered[entry] if d["metadata"].get("namespace")]


def test_role_has_exactly_the_operators_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["operator"]
    (role,) = of_kind(docs, "Role")
    rules = [(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]]
    assert rules == EXPECTED_RULES
    assert not [r for r in rules if any("*" in x for part in r for x in part)]
    (binding,) = of_kind(docs, "RoleBinding")
    (sa,) = of_kind(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"]}]


def test_operator_deployment(bed: Any, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["operator"]
    (dep,) = of_kind(docs, "Deployment")
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    assert set(services) == {"kto-operator-metrics", "kto-console"}, services
    svc, console = services["kto-operator-metrics"], services["kto-console"]
    (sa,) = of_kind(docs, "ServiceAccount")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    # PowerSchedule never scales the operator: it recognises this label.
    from kto_operator.naming import LABEL_NAME, OPERATOR_NAME
    from kto_operator.power.workloads import Selection, exclusion

    assert pod["metadata"]["labels"][LABEL_NAME] == OPERATOR_NAME
    assert exclusion("Deployment", dep, Selection()) == "the operator itself"
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert c["image"] == f"kto-operator:{_version('operator', bed.repo)}"
    assert "--namespace=$(POD_NAMESPACE)" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    liveness_arg = next(a for a in c["args"] if a.startswith("--liveness="))
    assert liveness_arg == f"--liveness=http://0.0.0.0:{ports['healthz']}/healthz"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    config = of_kind(docs, "ConfigMap")[0]["data"]
    assert int(config["KTO_METRICS_PORT"]) == ports["metrics"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": ports["metrics"], "targetPort": "metrics"}]
    assert console["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in console["spec"]["ports"]] == ["console"] and "console" in ports
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}


@pytest.mark.parametrize("entry", NAMESPACED_ENTRIES)
def test_restricted_fields_resources_and_no_fixed_uid(entry: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for workload in of_kind(rendered[entry], *WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        pod_spec = pod_from(workload)["spec"]
        pod_sc = pod_spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}
        fixed = {k for k in ("runAsUser",) if k in pod_sc}
        for c in _containers(workload):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert "readOnlyRootFilesystem" in sc, f"{name}/{c['name']}: say whether the root FS is read-only"
            fixed |= {k for k in ("runAsUser",) if k in sc}
            assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"], name
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
        assert not fixed or (entry, name) in FIXED_UID_ALLOWED, f"{entry}: {name} fixes a UID"


def test_example_trainingrun(bed: Any, rendered: dict[str, list[dict[str, Any]]]) -> None:
    (run,) = of_kind(rendered["examples"], "TrainingRun")
    spec = run["spec"]
    assert spec["image"] == f"kto-trainer:{_version('trainer', bed.repo)}"
    assert spec["resources"]["limits"] == {"cpu": "1300m", "memory": "4000Mi"}
    params = spec["parameters"]
    assert (params["split_ratio_train"], params["split_ratio_evaluate"], params["split_ratio_test"]) == (0.8, 0.1, 0.1)
    assert (params["batch_size"], params["epochs"]) == (64, 4)
    # The Secret it names is the platform's, with the keys the operator injects.
    (secret,) = of_kind(rendered["platform"], "Secret")
    assert spec["s3"]["credentialsSecret"] == spec["mlflow"]["credentialsSecret"] == secret["metadata"]["name"]
    from kto_operator.jobs import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS

    assert set(S3_SECRET_KEYS) | set(MLFLOW_SECRET_KEYS[:2]) <= set(secret["data"])


def test_example_powerschedule_wakes_the_platform_not_the_operator(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from kto_operator.power.reconcile import WAKE_ORDER
    from kto_operator.power.workloads import Selection, exclusion

    (power,) = of_kind(rendered["examples"], "PowerSchedule")
    spec = power["spec"]
    assert spec["wakeOnRun"] is True and spec["idleAfter"] and spec["schedule"]["on"].endswith("1-5")
    selection = Selection.from_spec(spec)
    platform = of_kind(rendered["platform"], "Deployment", "StatefulSet")
    assert {(w["kind"], w["metadata"]["name"]) for w in platform if exclusion(w["kind"], w, selection) is None} == {
        ("StatefulSet", "mysql"), ("Deployment", "minio"), ("Deployment", "mlflow")}
    (operator,) = of_kind(rendered["operator"], "Deployment")
    assert exclusion("Deployment", operator, selection) is not None
    # MySQL (a StatefulSet) wakes first; MLflow's init container waits for MySQL and MinIO.
    assert WAKE_ORDER.index("StatefulSet") < WAKE_ORDER.index("Deployment")
    mlflow = next(w for w in platform if w["metadata"]["name"] == "mlflow")
    init = mlflow["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["python", "/scripts/prepare.py"]


@pytest.mark.parametrize("entry", ["platform", "platform/openshift", "platform/bed"])
def test_workload_secret_refs_exist(entry: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    secrets = {s["metadata"]["name"]: set(s.get("data") or {}) for s in of_kind(rendered[entry], "Secret")}
    assert list(secrets) == ["kto-platform"]
    for workload in of_kind(rendered[entry], *WORKLOAD_KINDS):
        for c in _containers(workload):
            for var in c.get("env") or []:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets[ref["name"]], f"{workload['metadata']['name']}: {ref}"


def test_secrets_template_holds_no_credentials(bed: Any) -> None:
    example = bed.repo / "manifests/platform/secrets/secrets.env.example"
    values = dict(line.split("=", 1) for line in example.read_text().splitlines()
                  if line and not line.startswith("#"))
    for key, value in values.items():
        if any(word in key for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
            assert value == "change-me", key
    ignored = subprocess.run(["git", "check-ignore", "-q", "manifests/platform/secrets/secrets.env"],
                             cwd=bed.repo, check=False)
    assert ignored.returncode == 0, "secrets.env must be git-ignored"


def test_the_overlay_in_install_md_renders(bed: Any, tmp_path: Path) -> None:
    """docs/install.md's user overlay (images, namespace, MLflow URL) works as written."""
    text = (bed.repo / "docs/install.md").read_text()
    block = text.split("# my-kto/kustomization.yaml, next to the kto-mlflow checkout\n", 1)[1].split("```", 1)[0]
    workspace(bed.repo, tmp_path / "kto-mlflow")
    (tmp_path / "my-kto").mkdir()
    (tmp_path / "my-kto/kustomization.yaml").write_text(block)
    docs = render(bed, tmp_path, "my-kto")
    assert {d["metadata"].get("namespace") for d in docs} == {"my-namespace"}
    images = {c["image"] for d in of_kind(docs, *WORKLOAD_KINDS) for c in _containers(d)}
    assert {"quay.io/you/kto-operator:0.1.0", "quay.io/you/kto-mlflow:0.1.0"} <= images
    assert not [i for i in images if i.startswith(("kto-operator", "kto-mlflow"))]
    (config,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("kto-operator-config")]
    assert config["data"]["KTO_MLFLOW_UI_URL"].startswith("https://") and config["data"]["KTO_METRICS_PORT"]
    (dep,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "kto-operator"]
    ref = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    assert ref == config["metadata"]["name"]  # the merged ConfigMap's new hash is referenced
    assert of_kind(docs, "Route") and of_kind(docs, "Role")
