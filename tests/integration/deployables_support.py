"""Helpers of the deployables tests (tests/integration/test_deployables*.py): kustomize renders of a copy
of manifests/ (so that a generated secrets.env never lands in the working tree), restricted namespaces,
pods from workload templates."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

ENTRIES = ("crds", "operator", "platform", "platform/openshift", "platform/bed", "examples")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}


def secrets_env(example: Path) -> str:
    """The template with every placeholder replaced by a random letters-and-digits value."""
    lines = []
    for line in example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and value == "change-me":
            value = secrets.token_hex(12)
        lines.append(f"{key}{sep}{value}" if sep else line)
    return "\n".join(lines) + "\n"


def workspace(repo: Path, dest: Path) -> Path:
    """A copy of manifests/ and crds/ with secrets.env filled in; returns the copied manifests/ folder."""
    shutil.copytree(repo / "crds", dest / "crds")
    shutil.copytree(repo / "manifests", dest / "manifests",
                    ignore=shutil.ignore_patterns("secrets.env"))
    sec = dest / "manifests/platform/secrets"
    (sec / "secrets.env").write_text(secrets_env(sec / "secrets.env.example"))
    return dest / "manifests"


def render(bed: Any, manifests: Path, entry: str) -> list[dict[str, Any]]:
    out = bed.kubectl("kustomize", str(manifests / entry)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"])


def pod_from(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The pod a controller would create from a workload's template (name, labels, spec)."""
    template = pod_template(workload)
    meta = dict(template.get("metadata") or {})
    meta["name"] = name or f"{workload['metadata']['name']}-pod"
    spec = dict(template["spec"])
    # A StatefulSet's pods get a volume per claim template (claim <template>-<set>-<ordinal>).
    claims = workload["spec"].get("volumeClaimTemplates") or [] if workload["kind"] == "StatefulSet" else []
    if claims:
        spec["volumes"] = list(spec.get("volumes") or []) + [
            {"name": c["metadata"]["name"],
             "persistentVolumeClaim": {"claimName": f"{c['metadata']['name']}-{workload['metadata']['name']}-0"}}
            for c in claims]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def label_restricted(bed: Any, namespace: str) -> None:
    client.CoreV1Api(bed.api()).patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
