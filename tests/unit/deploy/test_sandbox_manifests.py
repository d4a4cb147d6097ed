"""manifests/sandbox (Sandbox mode, no CRD) read without a cluster: the CronJobs call the one-shot command with
arguments it accepts, never switch themselves, and outlive their own waits; the Role holds nothing of kto.dev;
the training Job passes the trainer valid flags, reads the platform Secret's real keys and names its MLflow run.
tests/integration/test_sandbox.py applies them on the bed as an `edit` user."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kto_operator.power import cli, switch
from kto_operator.power.workloads import managed
from kto_trainer.cli import parse_config

REPO = Path(__file__).resolve().parents[3]
SANDBOX = REPO / "manifests/sandbox"
RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


def docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SANDBOX / path).read_text()) if d]


def cronjobs() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs("power/cronjobs.yaml")}


def test_kustomizations_list_every_file() -> None:
    for folder in ("power", "training"):
        listed = set(yaml.safe_load((SANDBOX / folder / "kustomization.yaml").read_text())["resources"])
        assert listed == {p.name for p in (SANDBOX / folder).glob("*.yaml")} - {"kustomization.yaml"}
    assert yaml.safe_load((SANDBOX / "kustomization.yaml").read_text())["resources"] == ["power"]


@pytest.mark.parametrize("name", ["kto-power-off", "kto-power-on"])
def test_cronjob_runs_the_command_it_means(name: str) -> None:
    cron = cronjobs()[name]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "kto_operator.power"]
    assert importlib.util.find_spec("kto_operator.power.__main__") is not None
    args = cli.parse_args(container["args"])  # SystemExit on an unknown or malformed flag
    assert args.state == name.rsplit("-", 1)[1]
    opts = cli.options(args, "ns", {})
    platform = {"metadata": {"name": "mlflow", "labels": {"app.kubernetes.io/part-of": "kto-mlflow"}}}
    assert managed("Deployment", [platform], opts.selection) == [platform]
    # Its own CronJobs are never switched (the off CronJob would suspend the on one), whatever the selector.
    labels = cron["metadata"]["labels"] | {"app.kubernetes.io/part-of": "kto-mlflow"}
    own = {"metadata": {"name": name, "labels": labels}}
    assert managed("CronJob", [own], opts.selection) == []
    assert managed("CronJob", [own], switch.selection()) == []
    assert cron["metadata"]["labels"]["app.kubernetes.io/name"] == switch.OWN_LABEL[1]
    # The pod outlives the command's own waits (else the deadline kills a sleep that waits for a training).
    assert pod["activeDeadlineSeconds"] > max(opts.wait_for_training, opts.ready_timeout) + 60
    assert pod["serviceAccountName"] == docs("power/serviceaccount.yaml")[0]["metadata"]["name"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in \
        container["env"]
    assert RESTRICTED.items() <= container["securityContext"].items()
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "runAsUser" not in str(pod)  # OpenShift assigns the UID
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["timeZone"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_on_window_is_shorter_than_the_idlers_12_hours() -> None:
    on, off = (cronjobs()[n]["spec"]["schedule"].split() for n in ("kto-power-on", "kto-power-off"))
    assert 0 < int(off[1]) - int(on[1]) < 12
    assert cronjobs()["kto-power-on"]["spec"]["timeZone"] == cronjobs()["kto-power-off"]["spec"]["timeZone"]


def test_role_and_binding() -> None:
    (role,) = docs("power/role.yaml")
    (binding,) = docs("power/rolebinding.yaml")
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert "kto.dev" not in groups and "*" not in str(role["rules"])
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [cli.DEFAULT_CONFIGMAP] for r in named)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kto-power"}]


def training() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    (job,) = docs("training/job.yaml")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return job, pod, container


def test_training_job_passes_the_trainer_valid_flags() -> None:
    _, _, container = training()
    config = parse_config(container["args"])  # SystemExit on a flag the trainer refuses
    assert (config.split_ratio_train, config.batch_size, config.epochs) == (0.8, 64, 4)


def test_training_job_reads_the_platform_secrets_real_keys() -> None:
    _, _, container = training()
    example = (REPO / "manifests/platform/secrets/secrets.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs and {r["name"] for r in refs} == {"kto-platform"}
    assert {r["key"] for r in refs} <= keys
    assert all(r.get("optional") for r in refs if r["key"].startswith("MLFLOW_"))


def test_training_job_names_its_mlflow_run_and_holds_the_platform_awake() -> None:
    job, pod, container = training()
    env = container["env"]
    names = [e["name"] for e in env]
    assert "MLFLOW_RUN_ID" not in names  # the trainer creates its run (kto_trainer.tracking.tracked_run)
    values = {e["name"]: e.get("value") for e in env}
    assert values["MLFLOW_EXPERIMENT_NAME"]
    context = values["MLFLOW_RUN_CONTEXT"]
    # $(VAR) expands only variables defined earlier in the list.
    for var in re.findall(r"\$\((\w+)\)", context):
        assert var in names[:names.index("MLFLOW_RUN_CONTEXT")], var
    tags = json.loads(re.sub(r"\$\((\w+)\)", "x", context))
    assert tags["mlflow.runName"] == "x" and tags["kto.dev/job"] == "x"
    label = {switch.TRAINER_LABEL[0]: switch.TRAINER_LABEL[1]}
    assert label.items() <= job["metadata"]["labels"].items()
    assert label.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert switch.active_trainers([job]) == [job["metadata"]["name"]]
    # A pod deadline (the Sandbox's short-lived quota; far below the idler's 12 h) and a Job TTL.
    assert 0 < pod["activeDeadlineSeconds"] < 12 * 3600 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["backoffLimit"] == 0
    # Limits given, above the Sandbox LimitRange's 1000Mi default that would OOM-kill VGG16.
    assert container["resources"]["limits"]["memory"] == "4000Mi"
    assert RESTRICTED.items() <= container["securityContext"].items()
    assert pod["automountServiceAccountToken"] is False
