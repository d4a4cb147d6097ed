"""The trainer Job, built as a plain dict by a pure function (no API calls, fully unit-tested)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from . import indexed, naming
from .settings import OperatorSettings

# Secret keys read through secretKeyRef. The values never pass through the operator.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
ENV_RUN_ID = "MLFLOW_RUN_ID"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT_ID = "MLFLOW_EXPERIMENT_ID"
ENV_S3_ENDPOINT = "MLFLOW_S3_ENDPOINT_URL"

_PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,249}$")


class InvalidSpec(ValueError):
    """The TrainingRun asks for something the CRD schema cannot rule out but the operator cannot do."""


@dataclasses.dataclass(frozen=True)
class MlflowIds:
    """The MLflow run a Job reports to."""

    run_id: str
    experiment_id: str
    tracking_uri: str


def tracking_uri(spec: Mapping[str, Any], settings: OperatorSettings) -> str:
    """The TrainingRun's tracking URI, or the operator's default."""
    return str((spec.get("mlflow") or {}).get("trackingUri") or settings.tracking_uri)


def render_value(value: Any) -> str:
    """One parameter value as text, the same for the `--key=value` argument and the MLflow param (the
    trainer logs what it parsed; identical text keeps MLflow from rejecting a param logged twice)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        # JSON has one number type: 4.0 comes back from the API as 4 in some clients, 4.0 in others.
        return str(int(value))
    return str(value)


def validate_parameters(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The parameters rendered to text, or InvalidSpec for what the schema lets through (extra keys are
    untyped there): non-scalar values and keys that cannot be a `--key` argument."""
    rendered: dict[str, str] = {}
    for key in sorted(parameters):
        value = parameters[key]
        if not _PARAM_KEY_RE.match(key):
            raise InvalidSpec(f"parameter name {key!r} is not usable as --{key}=...: use letters, digits, _ . -")
        if value is None or isinstance(value, (dict, list)):
            raise InvalidSpec(f"parameter {key!r} must be a string, number or boolean, got {type(value).__name__}")
        rendered[key] = render_value(value)
    return rendered


def parameter_args(parameters: Mapping[str, Any]) -> list[str]:
    """`--key=value` arguments, sorted by key so that the Job is deterministic."""
    return [f"--{key}={value}" for key, value in validate_parameters(parameters).items()]


def _secret_env(name: str, secret: str, key: str, *, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def build_env(spec: Mapping[str, Any], settings: OperatorSettings, ids: MlflowIds) -> list[dict[str, Any]]:
    """The trainer's environment: MLflow run coordinates, S3 and MLflow credentials by reference, then the
    TrainingRun's own variables."""
    env: list[dict[str, Any]] = [
        {"name": ENV_RUN_ID, "value": ids.run_id},
        {"name": ENV_TRACKING_URI, "value": ids.tracking_uri},
        {"name": ENV_EXPERIMENT_ID, "value": ids.experiment_id},
    ]
    s3 = spec.get("s3") or {}
    if s3.get("endpoint"):
        env.append({"name": ENV_S3_ENDPOINT, "value": str(s3["endpoint"])})
    if s3.get("credentialsSecret"):
        env += [_secret_env(k, s3["credentialsSecret"], k, optional=False) for k in S3_SECRET_KEYS]
    mlflow = spec.get("mlflow") or {}
    if mlflow.get("credentialsSecret"):
        # Optional keys: a server uses either username/password or a token.
        env += [_secret_env(k, mlflow["credentialsSecret"], k, optional=True) for k in MLFLOW_SECRET_KEYS]
    injected = {item["name"] for item in env}
    for item in spec.get("env") or []:
        if item.get("name") in injected:
            raise InvalidSpec(
                f"env {item.get('name')} is set by the operator (from spec.s3 / spec.mlflow); remove it from spec.env"
            )
        env.append(dict(item))
    return env


def restricted_security_context() -> dict[str, Any]:
    """Container securityContext meeting Pod Security 'restricted'. No runAsUser: OpenShift assigns an
    arbitrary UID (restricted-v2 SCC) and images must cope with it."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def owner_reference(run: Mapping[str, Any]) -> dict[str, Any]:
    meta = run["metadata"]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_job(run: Mapping[str, Any], settings: OperatorSettings, ids: MlflowIds) -> dict[str, Any]:
    """The batch/v1 Job manifest running the trainer of TrainingRun `run` for MLflow run `ids`: one pod, or
    an Indexed Job of spec.workers pods (see indexed)."""
    meta = run["metadata"]
    spec = run["spec"]
    name = naming.job_name(meta["name"])
    labels = naming.trainingrun_labels(meta["name"], meta["uid"])
    annotations = {naming.ANNOTATION_TRAININGRUN: meta["name"], naming.ANNOTATION_MLFLOW_RUN_ID: ids.run_id}

    container: dict[str, Any] = {
        "name": naming.CONTAINER_NAME,
        "image": spec["image"],
        "args": parameter_args(spec.get("parameters") or {}),
        "env": build_env(spec, settings, ids),
        "securityContext": restricted_security_context(),
        # The log tail becomes the termination message when the trainer fails: shown in status.message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.get("command"):
        container["command"] = list(spec["command"])
    resources = spec.get("resources") or settings.default_resources
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items() if k in ("limits", "requests")}

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        # A trainer gets no Service environment variables (dozens in a busy namespace).
        "enableServiceLinks": False,
    }
    service_account = spec.get("serviceAccountName") or settings.default_service_account
    if service_account and settings.own_service_account == (meta["namespace"], service_account):
        raise InvalidSpec(f"ServiceAccount {service_account} is the operator's own: a TrainingRun never runs with "
                          "the operator's rights; name another serviceAccountName (or none)")
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    else:
        # The namespace's default ServiceAccount: a trainer has no use for an API token.
        pod_spec["automountServiceAccountToken"] = False
    # The run's deadline on the pod too: only a pod's own deadline puts it in a quota's Terminating scope.
    pod_deadline = spec.get("activeDeadlineSeconds") or settings.default_pod_deadline
    if pod_deadline:
        pod_spec["activeDeadlineSeconds"] = int(pod_deadline)
    if spec.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(spec["nodeSelector"])
    if spec.get("tolerations"):
        pod_spec["tolerations"] = [dict(t) for t in spec["tolerations"]]

    job_spec: dict[str, Any] = {
        "backoffLimit": int(spec.get("backoffLimit", 0)),
        "completions": 1,
        "parallelism": 1,
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    if spec.get("activeDeadlineSeconds") is not None:
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    ttl = spec.get("ttlSecondsAfterFinished", settings.default_ttl)
    if ttl is not None:
        job_spec["ttlSecondsAfterFinished"] = int(ttl)

    problem = indexed.spec_problem(name, spec)
    if problem:
        raise InvalidSpec(problem)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }
    return indexed.distribute(job, indexed.workers(spec))
