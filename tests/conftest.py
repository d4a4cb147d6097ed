"""Session fixtures for the local bed: real kube-apiserver, controller-manager, scheduler, etcd,
MinIO and MLflow. The bed is started here when it is not already up, and stopped at the end only if
this session started it (set KTO_KEEP_BED=1 to keep it)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # No MLflow telemetry from tests (no internet here; and it can deadlock with autolog in MLflow 3.17).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@dataclass
class Bed:
    repo: Path
    env: dict[str, str]
    kubeconfig: Path
    artifact_bucket: str
    _api: object | None = field(default=None, repr=False)

    def api(self):  # type: ignore[no-untyped-def]
        from kubernetes import config

        if self._api is None:
            self._api = config.new_client_from_config(str(self.kubeconfig))
        return self._api

    def stop(self, component: str) -> None:
        """Stop one bed daemon (kube-apiserver, mlflow, minio, ...) for fault-injection tests."""
        from kto_bed import cli
        from kto_bed.paths import BedPaths

        cli.stop_component(BedPaths.default(), component)

    def start(self, component: str) -> None:
        from kto_bed import cli
        from kto_bed.controlplane import Ports
        from kto_bed.paths import BedPaths

        cli.start_component(BedPaths.default(), Ports.from_env(), component)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run(["kubectl", *args], env=env, text=True, capture_output=True, check=check,
                              input=input, timeout=timeout)


def _read_env(path: Path) -> dict[str, str]:
    import shlex

    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    from kto_bed import cli
    from kto_bed.controlplane import Ports
    from kto_bed.paths import BedPaths, k8s_bin
    from kto_bed.services import ARTIFACT_BUCKET

    paths, ports = BedPaths.default(), Ports.from_env()
    was_up = cli.status_quiet(paths)
    if not was_up:
        cli.up(paths, ports)
    env = _read_env(paths.env_file)
    env["PATH"] = f"{k8s_bin('kubectl').parent}{os.pathsep}{os.environ['PATH']}"
    yield Bed(repo=REPO, env=env, kubeconfig=paths.kubeconfig, artifact_bucket=ARTIFACT_BUCKET)
    if not was_up and not os.environ.get("KTO_KEEP_BED"):
        cli.down(paths)


@pytest.fixture
def namespace(bed: Bed) -> Iterator[str]:
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(bed.api())
    core.create_namespace({"metadata": {"name": name, "labels": {"kto.dev/test": "true"}}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


RESTRICTED_LABELS = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture
def openshift_namespace(bed: Bed) -> Iterator[str]:
    """A namespace like a Developer Sandbox project: arbitrary UIDs from its range, PSS restricted enforced."""
    from kto_bed.node import OPENSHIFT_ANNOTATIONS
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(bed.api())
    core.create_namespace({"metadata": {"name": name, "annotations": OPENSHIFT_ANNOTATIONS,
                                        "labels": {"kto.dev/test": "true", **RESTRICTED_LABELS}}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def s3(bed: Bed):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=bed.env["MLFLOW_S3_ENDPOINT_URL"],
                        aws_access_key_id=bed.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=bed.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mlflow_uri(bed: Bed) -> str:
    return bed.env["MLFLOW_TRACKING_URI"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.helpers import FIGURES

    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)
