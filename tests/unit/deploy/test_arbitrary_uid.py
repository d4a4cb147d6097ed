"""The entry points under a UID that has no passwd entry, as OpenShift runs our images (an arbitrary UID
in group 0) and as any runtime does that adds no entry for the image's numeric USER.

The UID is simulated honestly: `unshare --user --map-user=54321` runs the process in a user namespace where
its UID is 54321, which /etc/passwd does not list, so getpwuid() fails exactly as in such a pod (the
process keeps this machine's file access, so the virtualenv stays readable). No variable names the user:
USER, LOGNAME and POD_ID are removed, as in a pod whose image sets none."""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kto_trainer.datasets import synthetic_images, write_layout

from tests.helpers import wait_for

UID = 54321
UNSHARE = ["unshare", "--user", f"--map-user={UID}", "--map-group=0"]
NAMING_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        pwd.getpwuid(UID)
        return False  # the UID has an entry here: the simulation would prove nothing
    except KeyError:
        pass
    return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_works(), reason="needs unshare --user (root or user namespaces)")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NAMING_VARIABLES and not k.startswith(("KUBE", "MLFLOW_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@pytest.mark.parametrize("module", ["kto_operator.identity", "kto_trainer.identity"])
def test_user_named_after_the_uid_only_when_nothing_names_it(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = importlib.import_module(module)
    assert identity.ensure_user_name({"USER": "kto"}) is None

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    environ: dict[str, str] = {}
    monkeypatch.setattr(identity.pwd, "getpwuid", no_entry)
    assert identity.ensure_user_name(environ) == f"uid-{os.getuid()}"
    assert environ == {"USER": f"uid-{os.getuid()}"}
    monkeypatch.undo()
    if os.getuid() == 0:  # root always has an entry: nothing to set
        assert identity.ensure_user_name({}) is None


@needs_unshare
def test_the_simulated_uid_has_no_passwd_entry() -> None:
    done = subprocess.run([*UNSHARE, sys.executable, "-c", "import getpass, os; print(os.getuid()); getpass.getuser()"],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(UID)
    assert done.returncode != 0 and f"uid not found: {UID}" in done.stderr


@needs_unshare
def test_operator_starts_without_passwd_entry(tmp_path: Path) -> None:
    """`python -m kto_operator` gets past kopf's identity (getpass.getuser() without POD_ID) to its login,
    which fails here for want of a cluster: the process keeps retrying instead of exiting with KeyError."""
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*UNSHARE, sys.executable, "-m", "kto_operator", "--namespace", "x", "--liveness", ""],
                                env=_env(KUBECONFIG=str(tmp_path / "no-such-kubeconfig"), KTO_METRICS_PORT="0"),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: "no-such-kubeconfig" in log.read_text() or proc.poll() is not None, 60,
                 "the operator's login attempt")
        text = log.read_text()
        assert proc.poll() is None, f"the operator exited:\n{text[-3000:]}"
        assert "getpwuid" not in text and "no-such-kubeconfig" in text, text[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)


@needs_unshare
def test_trainer_creates_its_mlflow_run_without_passwd_entry(tmp_path: Path) -> None:
    """`python -m kto_trainer` without MLFLOW_RUN_ID creates its own run, which MLflow tags with the user
    name: the run exists, tagged uid-54321; the trainer then stops on the dataset (its annotation file is
    missing on purpose: no training needed here) with its one-line error, exit 2, and the run FAILED."""
    import mlflow

    dataset = tmp_path / "dataset-root"
    write_layout(dataset, synthetic_images(6, 32, seed=1))
    (dataset / "dataset/cats_dogs_others-annotations.json").unlink()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("no-passwd", artifact_location=str(tmp_path / "art"))
    done = subprocess.run([*UNSHARE, sys.executable, "-m", "kto_trainer", f"--dataset_dir={dataset}",
                           f"--working_dir={tmp_path / 'work'}", "--weights=none", "--image_size=32"],
                          env=_env(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_ID=experiment),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "getpwuid" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]  # after TensorFlow's start-up chatter
    assert done.returncode == 2 and last.startswith("kto-train: error: "), done.stderr[-3000:]
    (run,) = mlflow.MlflowClient(uri).search_runs([experiment])
    assert run.data.tags["mlflow.user"] == f"uid-{UID}"
    assert run.info.status == "FAILED"
