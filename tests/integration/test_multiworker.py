# ruff: noqa: F811  (pytest fixtures imported from operator_fixtures are re-bound as test arguments)
"""spec.workers on the bed's real node: an Indexed Job of N pods that find each other by their pod hostnames
through the cluster DNS (headless Service), one MLflow run, a failing worker failing the run, cancel.

The operator runs as a subprocess. Workers are the stand-in image running small Python programs (cheap),
except in the digits test, where two kto-trainer pods train with TensorFlow's MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import figure, sleep_command, wait_for
from tests.integration.operator_fixtures import (  # noqa: F401  (fixtures)
    Operator,
    Runs,
    mlflow_client,
    operator,
    runs,
    runs_for_uid,
    trainingrun_crd,
)

pytestmark = pytest.mark.integration

# Each worker checks its TF_CONFIG against the Job's index, resolves every worker's name through the cluster
# DNS, listens on its port and connects to every other worker's (retrying while they start), waits until every
# other worker connected to it, then exits 0: a Succeeded run proves the names, the Service and the port.
PEERS = r"""
import json, os, socket, sys, threading, time
hosts = os.environ["KTO_WORKER_HOSTS"].split(",")
index = int(os.environ["JOB_COMPLETION_INDEX"])
config = json.loads(os.environ["TF_CONFIG"])
assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}, config
assert int(os.environ["KTO_WORKER_INDEX"]) == index
port = int(hosts[index].rsplit(":", 1)[1])
server = socket.create_server(("", port))
accepted = []
threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in hosts[1:]], daemon=True).start()
deadline = time.monotonic() + 120
for peer in hosts:
    if peer == hosts[index]:
        continue
    host, peer_port = peer.rsplit(":", 1)
    while True:
        try:
            address = socket.getaddrinfo(host, None)[0][4][0]
            socket.create_connection((host, int(peer_port)), timeout=5).close()
            print(f"worker {index}: {host} is {address}, port {peer_port} open", flush=True)
            break
        except OSError as error:
            if time.monotonic() > deadline:
                sys.exit(f"worker {index}: {peer}: {error}")
            time.sleep(0.5)
while len(accepted) < len(hosts) - 1:
    if time.monotonic() > deadline:
        sys.exit(f"worker {index}: only {len(accepted)} peers connected")
    time.sleep(0.2)
print(f"worker {index}: all {len(hosts)} workers reached", flush=True)
"""


def _service(runs: Runs, name: str) -> Any:
    from kubernetes.client.rest import ApiException

    try:
        return runs.core.read_namespaced_service(name, runs.namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def test_workers_resolve_each_other_by_pod_hostname(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("peers", workers=3, command=["python", "-c", PEERS])
    st = runs.wait_phase("peers", ("Succeeded", "Failed"), 150)
    assert st["phase"] == "Succeeded", st
    assert st["workers"] == "3/3"
    job = runs.batch.read_namespaced_job("peers", runs.namespace)
    assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 3, 3)
    service = _service(runs, "peers")
    assert service.spec.cluster_ip == "None"
    assert [o.uid for o in service.metadata.owner_references] == [runs.get("peers")["metadata"]["uid"]]
    for index in range(3):
        pod = next(p for p in runs.pods("peers")
                   if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(index))
        assert (pod.spec.hostname, pod.spec.subdomain) == (f"peers-{index}", "peers")
        log = runs.core.read_namespaced_pod_log(pod.metadata.name, runs.namespace)
        assert f"worker {index}: all 3 workers reached" in log, log
    [run] = runs_for_uid(mlflow_uri, f"it-{runs.namespace}", runs.get("peers")["metadata"]["uid"])
    assert run.info.status == "FINISHED"
    # The Service goes with its TrainingRun (garbage collection of what it owns).
    runs.delete("peers")
    wait_for(lambda: _service(runs, "peers") is None, 60, "the workers' Service gone with the TrainingRun")


def _container_pids(pod: Any) -> set[int]:
    """PIDs of the pod's trainer container on this host (the bed's node is this machine): its cgroup."""
    container_id = next(s.container_id for s in pod.status.container_statuses if s.name == "trainer")
    container_id = container_id.split("://", 1)[1]
    pids: set[int] = set()
    for top in Path("/sys/fs/cgroup").iterdir():
        root = top / "kubepods"
        if not root.is_dir():
            continue
        for procs in root.rglob(f"*{container_id}*/cgroup.procs"):
            pids |= {int(p) for p in procs.read_text().split()}
    return pids


def test_a_killed_worker_fails_the_run_and_is_named(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("killed", workers=2, command=sleep_command(300))
    wait_for(lambda: runs.status("killed").get("workers") == "2/2" and runs.status("killed"), 120, "2 workers running")
    victim = next(p for p in runs.pods("killed")
                  if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "1")
    pids = wait_for(lambda: _container_pids(victim), 10, "the worker's processes")
    for pid in pids:  # as abrupt as an OOM kill or a lost node: SIGKILL, exit code 137
        os.kill(pid, signal.SIGKILL)
    st = runs.wait_phase("killed", ("Succeeded", "Failed", "Cancelled"), 90)
    assert (st["phase"], st["reason"]) == ("Failed", "ExitCode"), st
    assert st["message"].startswith(f"worker 1 (pod {victim.metadata.name}): trainer exited with code 137"), st
    # Worker 0 was stopped by the Job controller (podFailurePolicy FailJob), not left sleeping.
    wait_for(lambda: not [p for p in runs.pods("killed") if p.status.phase not in ("Succeeded", "Failed")],
             60, "no worker left running")
    assert runs.batch.read_namespaced_job("killed", runs.namespace).status.failed >= 1
    [run] = runs_for_uid(mlflow_uri, f"it-{runs.namespace}", runs.get("killed")["metadata"]["uid"])
    assert run.info.status == "FAILED"


def test_cancel_stops_every_worker(operator: Operator, runs: Runs, mlflow_uri: str) -> None:
    operator.start()
    runs.submit("cancelw", workers=2, command=sleep_command(300))
    wait_for(lambda: runs.status("cancelw").get("workers") == "2/2" and runs.status("cancelw"), 120,
             "2 workers running")
    assert runs.status("cancelw")["phase"] == "Running"
    runs.patch_spec("cancelw", {"cancel": True})
    st = runs.wait_phase("cancelw", ("Cancelled", "Failed", "Succeeded"), 60)
    assert (st["phase"], st["reason"]) == ("Cancelled", "Cancelled"), st
    assert st["message"].startswith("cancelled")
    wait_for(lambda: not runs.jobs() and not runs.pods("cancelw"), 60, "the Job and every worker's pod gone")
    assert mlflow_client(mlflow_uri).get_run(st["mlflow"]["runId"]).info.status == "KILLED"


# The digits settings of tests/integration/test_trainer_digits.py (531 images of 0/1/2 at 32 px, weights none,
# 20 epochs, batch 32, seed 0); batch_size is global, so both runs take the same 12 steps per epoch.
DIGITS, SIZE = 531, 32
PARAMETERS = {"split_ratio_train": 0.7, "split_ratio_evaluate": 0.15, "split_ratio_test": 0.15, "batch_size": 32,
              "epochs": 20, "image_size": SIZE, "weights": "none", "seed": 0}
MAX_ACCURACY_GAP = 0.03


def _single_worker(tmp_path: Path, mlflow_env: dict[str, str]) -> subprocess.Popen[str]:
    """The same training alone, as a process on this machine (what one worker gets), from the same images."""
    from kto_trainer.datasets import digits_images, write_layout

    write_layout(tmp_path / "digits", digits_images(DIGITS, SIZE, seed=0))
    args = [f"--{key}={value}" for key, value in PARAMETERS.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "kto_trainer", *args, f"--working_dir={tmp_path / 'single'}",
         f"--dataset_dir={tmp_path / 'digits'}"],
        env={**os.environ, **mlflow_env, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_two_workers_train_the_digits_like_one(operator: Operator, runs: Runs, mlflow_uri: str, s3: Any,
                                               bucket: str, tmp_path: Path) -> None:
    from kto_trainer.dataset_tool import upload_dataset
    from kto_trainer.datasets import digits_images

    upload_dataset(s3, bucket, digits_images(DIGITS, SIZE, seed=0), workers=8)
    runs.s3_secret(runs.bed.env["AWS_ACCESS_KEY_ID"], runs.bed.env["AWS_SECRET_ACCESS_KEY"])
    operator.start()
    # A CPU limit per worker, as a user sets one: each worker sizes its threads to it (1 of the 2 cores).
    runs.submit("digits2", image="kto-trainer:0.1.0", workers=2, parameters={**PARAMETERS, "bucket": bucket},
                s3={"endpoint": runs.bed.env["MLFLOW_S3_ENDPOINT_URL"], "credentialsSecret": "s3-creds"},
                resources={"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "3Gi"}})
    # Meanwhile, the reference: one worker, same settings, in a local MLflow store.
    single = _single_worker(tmp_path, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                       "MLFLOW_EXPERIMENT_NAME": "single-worker"})
    seen: list[str] = []
    st = runs.wait_phase("digits2", ("Succeeded", "Failed", "Cancelled"), 600, seen=seen)
    output = single.communicate(timeout=600)[0]
    assert st["phase"] == "Succeeded", f"{st}\n{output[-2000:]}"
    assert single.returncode == 0, output[-3000:]
    alone = float(re.findall(r"test_accuracy=([0-9.]+)", output)[-1])
    together = st["metrics"]["test_accuracy"]
    figure("2 workers, digits", f"test_accuracy {together:.4f} with 2 workers, {alone:.4f} alone")
    assert abs(together - alone) <= MAX_ACCURACY_GAP, (together, alone)
    assert "Running" in seen and st["workers"] == "2/2"
    assert st["progress"] == {"epoch": 20, "epochs": 20}

    uid = runs.get("digits2")["metadata"]["uid"]
    [run] = runs_for_uid(mlflow_uri, f"it-{runs.namespace}", uid)  # worker 1 logged no run of its own
    assert run.info.status == "FINISHED"
    assert run.data.tags["kto.workers"] == "2" and run.data.tags["kto.devices"] == "CPU"
    client = mlflow_client(mlflow_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == list(range(20))
    assert run.data.tags["kto.model_uri"]
    chief = next(p for p in runs.pods("digits2")
                 if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0")
    log = runs.core.read_namespaced_pod_log(chief.metadata.name, runs.namespace)
    assert "worker 0 of 2 (digits2-0.digits2:2222, digits2-1.digits2:2222); TensorFlow threads: 1, as its CPU limit" \
        in log, log
