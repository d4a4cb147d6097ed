"""The platform's credentials: MinIO and MySQL refuse the template's placeholders as MLflow's prepare step does
(refuse-placeholders.sh, run by /bin/sh as the images have it), MinIO's root user is not the trainers' S3 user,
and the OpenShift overlay exposes no MinIO console."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "manifests/platform/base"
GUARD = BASE / "refuse-placeholders.sh"


def guard(env: dict[str, str], *program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(GUARD), *program], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def test_placeholders_are_refused_and_the_program_never_runs() -> None:
    done = guard({"KTO_SECRET_ENV": "MINIO_ROOT_USER MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER": "admin",
                  "MINIO_ROOT_PASSWORD": "Change-Me"}, "echo", "started")
    assert done.returncode == 1 and "started" not in done.stdout
    assert done.stderr.strip() == ("refusing to start: MINIO_ROOT_PASSWORD still 'change-me': set real values in "
                                   "secrets.env and re-apply")
    both = guard({"KTO_SECRET_ENV": "A B", "A": "change-me", "B": "change-me"}, "true")
    assert both.returncode == 1 and "A B still" in both.stderr


def test_real_values_start_the_program_with_its_arguments() -> None:
    done = guard({"KTO_SECRET_ENV": "MYSQL_PASSWORD MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD": "c4f3e1d2",
                  "MYSQL_ROOT_PASSWORD": "change-me-not"}, "sh", "-c", 'echo "$0 $1"', "run-mysqld", "--port=3306")
    assert (done.returncode, done.stdout.strip()) == (0, "run-mysqld --port=3306"), done.stderr


def test_a_bad_variable_name_is_an_error_not_code() -> None:
    done = guard({"KTO_SECRET_ENV": "X;touch${IFS}/tmp/pwned"}, "true")
    assert done.returncode == 1 and "not a variable name" in done.stderr


def _containers() -> dict[str, dict[str, Any]]:
    found = {}
    for name in ("minio.yaml", "mysql.yaml"):
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                found[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return found


@pytest.mark.parametrize("workload, checked", [
    ("minio", {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}),
    ("mysql", {"MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"}),
])
def test_minio_and_mysql_start_through_the_guard(workload: str, checked: set[str]) -> None:
    pod = _containers()[workload]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["/bin/sh", "/scripts/refuse-placeholders.sh"]
    env = {e["name"]: e for e in container["env"]}
    assert set(env["KTO_SECRET_ENV"]["value"].split()) == checked
    secrets = {n for n, e in env.items() if "secretKeyRef" in (e.get("valueFrom") or {})}
    assert checked <= secrets
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["scripts"] == "/scripts" and volumes["scripts"]["configMap"]["name"] == "kto-platform-scripts"
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (scripts,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "kto-platform-scripts"]
    assert "refuse-placeholders.sh" in scripts["files"]


def _secret_keys(doc_file: str, container_filter: str) -> dict[str, str]:
    """env name -> Secret key of the containers named `container_filter` in a manifest."""
    keys = {}
    for doc in yaml.safe_load_all((BASE / doc_file).read_text()):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["name"] == container_filter:
                keys.update({e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in c.get("env", [])
                             if "secretKeyRef" in (e.get("valueFrom") or {})})
    return keys


def test_minio_root_user_is_not_the_trainers() -> None:
    assert _secret_keys("minio.yaml", "minio")["MINIO_ROOT_PASSWORD"] == "MINIO_ROOT_PASSWORD"
    server, prepare = _secret_keys("mlflow.yaml", "mlflow"), _secret_keys("mlflow.yaml", "prepare")
    # MLflow stores the artifacts as MinIO's root; the prepare step makes the trainers' user from AWS_* keys.
    assert server["AWS_SECRET_ACCESS_KEY"] == prepare["AWS_SECRET_ACCESS_KEY"] == "MINIO_ROOT_PASSWORD"
    assert (prepare["KTO_READER_ACCESS_KEY"], prepare["KTO_READER_SECRET_KEY"]) == \
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    example = (REPO / "manifests/platform/secrets/secrets.env.example").read_text()
    keys = {line.split("=")[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= keys


def test_no_minio_console_route() -> None:
    routes = list(yaml.safe_load_all((REPO / "manifests/platform/openshift/routes.yaml").read_text()))
    assert {r["metadata"]["name"] for r in routes} == {"mlflow", "minio"}
    assert all(r["spec"]["port"]["targetPort"] != "console" for r in routes)
