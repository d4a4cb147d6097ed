"""`spec.workers: N > 1`: the trainer Job made an Indexed Job of N pods plus the headless Service that gives
each pod a DNS name, so that TensorFlow's MultiWorkerMirroredStrategy can run on plain Kubernetes.

Pure functions over plain dicts (no API calls). One worker stays exactly the plain Job of `jobs.build_job`.

Each pod `<job>-<index>` (the Job controller names an Indexed Job's pod hostnames so) sits in subdomain `<job>`,
the headless Service of the same name, so it resolves as `<job>-<index>.<job>` from its namespace. Every pod
gets the worker list (`KTO_WORKER_HOSTS`), its index (`KTO_WORKER_INDEX`, the Job's completion index) and the
assembled `TF_CONFIG`, which the kubelet expands per pod (`$(KTO_WORKER_INDEX)`), so any TensorFlow program
finds its cluster, not only kto's trainer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from . import naming

WORKER_PORT = 2222  # TensorFlow's customary gRPC port for a worker (Kubeflow's TFJob uses it too)
PORT_NAME = "tf-worker"
ENV_WORKER_HOSTS = "KTO_WORKER_HOSTS"
ENV_WORKER_INDEX = "KTO_WORKER_INDEX"
ENV_TF_CONFIG = "TF_CONFIG"
WORKER_ENV = (ENV_WORKER_HOSTS, ENV_WORKER_INDEX, ENV_TF_CONFIG)
# Set by the Job controller on each pod of an Indexed Job (also exposed as JOB_COMPLETION_INDEX).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# A Service name is a DNS-1035 label: a letter first.
_SERVICE_NAME_START = "abcdefghijklmnopqrstuvwxyz"


def workers(spec: Mapping[str, Any]) -> int:
    """spec.workers (the CRD defaults it to 1)."""
    return int(spec.get("workers") or 1)


def worker_hosts(job_name: str, count: int, port: int = WORKER_PORT) -> list[str]:
    """`<job>-<i>.<job>:<port>` for each worker, in index order."""
    return [f"{job_name}-{index}.{job_name}:{port}" for index in range(count)]


def tf_config_template(job_name: str, count: int) -> str:
    """TF_CONFIG with the pod's index left as `$(KTO_WORKER_INDEX)`, which the kubelet substitutes."""
    cluster = json.dumps({"worker": worker_hosts(job_name, count)}, separators=(",", ":"))
    return f'{{"cluster":{cluster},"task":{{"type":"worker","index":$({ENV_WORKER_INDEX})}}}}'


def worker_env(job_name: str, count: int) -> list[dict[str, Any]]:
    """The variables each worker builds its TF_CONFIG from; KTO_WORKER_INDEX before TF_CONFIG (a `$(VAR)`
    reference only sees variables defined earlier in the list)."""
    index_ref = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}
    return [
        {"name": ENV_WORKER_HOSTS, "value": ",".join(worker_hosts(job_name, count))},
        {"name": ENV_WORKER_INDEX, "valueFrom": index_ref},
        {"name": ENV_TF_CONFIG, "value": tf_config_template(job_name, count)},
    ]


def spec_problem(job_name: str, spec: Mapping[str, Any]) -> str | None:
    """Why a TrainingRun cannot run on `workers` pods (None when it can): what the CRD's CEL rules cannot see."""
    count = workers(spec)
    if count == 1:
        return None
    if not job_name or job_name[0] not in _SERVICE_NAME_START:
        return (f"a TrainingRun with workers > 1 needs a name starting with a letter: its headless Service is "
                f"named {job_name!r}, and Service names are DNS-1035 labels")
    hostname = f"{job_name}-{count - 1}"
    if len(hostname) > naming.DNS_LABEL_MAX:
        return (f"the worker hostname {hostname!r} would exceed {naming.DNS_LABEL_MAX} characters: use a "
                f"TrainingRun name of at most {naming.DNS_LABEL_MAX - len(str(count - 1)) - 1} characters")
    if int(spec.get("backoffLimit") or 0) != 0:
        return ("backoffLimit must be 0 with workers > 1: a worker started again alone cannot rejoin the others' "
                "collective group, so one failing worker fails the run")
    taken = sorted({str(item.get("name")) for item in spec.get("env") or []} & set(WORKER_ENV))
    if taken:
        return f"env {', '.join(taken)} is set by the operator for workers > 1; remove it from spec.env"
    return None


def distribute(job: Mapping[str, Any], count: int) -> dict[str, Any]:
    """The plain trainer Job made an Indexed Job of `count` workers (unchanged for one worker).

    Any worker failing fails the Job at once (podFailurePolicy FailJob on a non-zero exit code): the Job
    controller then stops the other workers, which could only wait for the missing one."""
    if count == 1:
        return dict(job)
    result = copy.deepcopy(dict(job))
    name = result["metadata"]["name"]
    spec = result["spec"]
    spec.update(
        completionMode="Indexed", completions=count, parallelism=count,
        podFailurePolicy={"rules": [{
            "action": "FailJob",
            "onExitCodes": {"containerName": naming.CONTAINER_NAME, "operator": "NotIn", "values": [0]},
        }]},
    )
    pod = spec["template"]["spec"]
    pod["subdomain"] = name
    for container in pod["containers"]:
        if container["name"] == naming.CONTAINER_NAME:
            container["env"] = [*container.get("env", []), *worker_env(name, count)]
            container["ports"] = [{"name": PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"}]
    return result


def build_service(job: Mapping[str, Any], owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """The headless Service behind an Indexed trainer Job's pod DNS names (None for a one-worker Job).

    Owned by the TrainingRun (`owner`), like the Job, so that it goes with it. publishNotReadyAddresses:
    a worker's name resolves as soon as its pod has an address, not only once it is Ready, since TensorFlow
    connects to its peers while starting."""
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return None
    meta = job["metadata"]
    labels = dict(meta.get("labels") or {})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {naming.ANNOTATION_TRAININGRUN: meta["annotations"][naming.ANNOTATION_TRAININGRUN]},
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {naming.LABEL_TRAININGRUN_UID: labels[naming.LABEL_TRAININGRUN_UID]},
            "publishNotReadyAddresses": True,
            "ports": [{"name": PORT_NAME, "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }
