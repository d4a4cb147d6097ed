"""Each worker's share of a split, devices and precision tags, mixed precision; two workers on this machine
(slow: two TensorFlow processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from kto_trainer import distribute
from kto_trainer.config import TrainConfig
from kto_trainer.train import train

from tests.helpers import free_port


@pytest.mark.parametrize(("total", "count"), [(9, 2), (10, 2), (7, 3), (1, 2), (186, 4)])
def test_shards_cover_the_split_once_with_equal_lengths(total: int, count: int) -> None:
    paths = [f"img{i}.png" for i in range(total)]
    labels = [i % 3 for i in range(total)]
    shards = [distribute.shard(paths, labels, index, count) for index in range(count)]
    # Same number of examples per worker: same steps, same batch shapes (no empty batch anywhere).
    assert len({len(s.paths) for s in shards}) == 1 and len(shards[0].paths) == -(-total // count)
    real = sorted(p for s in shards for p, w in zip(s.paths, s.weights, strict=True) if w == 1.0)
    assert real == sorted(paths)
    for s in shards:
        assert len(s.paths) == len(s.labels) == len(s.weights)
        for path, label, weight in zip(s.paths, s.labels, s.weights, strict=True):
            if weight == 1.0:
                assert labels[paths.index(path)] == label
            else:
                assert weight == 0.0


def test_alone_the_run_records_its_devices_and_mixed_precision(
    tiny_dataset: Path, tmp_path: Path, mlflow_env: str
) -> None:
    config = TrainConfig(epochs=1, batch_size=8, image_size=32, weights="none", seed=3, mixed_precision=True,
                         working_dir=str(tmp_path / "work"), dataset_dir=str(tiny_dataset))
    try:
        metrics = train(config)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # a CPU: bfloat16
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["test_accuracy"] <= 1.0
    run = mlflow.search_runs([mlflow_env], output_format="list")[0]
    assert run.data.tags["kto.devices"] == "CPU"
    assert run.data.tags["kto.workers"] == "1"
    assert run.data.tags["kto.precision"] == "mixed_bfloat16"
    assert run.data.params["mixed_precision"] == "true"
    model = keras.models.load_model(config.model_path)
    assert model.layers[-1].dtype_policy.name == "float32"  # probabilities stay float32
    assert model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0).dtype == np.float32


@pytest.mark.slow
def test_two_workers_on_this_machine_train_one_run(tiny_dataset: Path, tmp_path: Path, mlflow_env: str) -> None:
    """Two trainer processes, TF_CONFIG from the operator's variables: worker 0 logs one MLflow run with the
    whole cluster's metrics, worker 1 logs nothing, both saw the same all-reduced history."""
    hosts = f"localhost:{free_port()},localhost:{free_port()}"
    procs = []
    for index in range(2):
        env = {**os.environ, "KTO_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": str(index),
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kto_trainer", "--epochs=2", "--batch_size=8", "--image_size=32",
             "--weights=none", "--seed=3", f"--working_dir={tmp_path / f'w{index}'}",
             f"--dataset_dir={tiny_dataset}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = mlflow.search_runs([mlflow_env], output_format="list")
    assert len(runs) == 1, "worker 1 must not log a run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kto.workers"] == "2"
    client = mlflow.MlflowClient()
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]
    assert len(losses) == 2
    # The same all-reduced loss on both workers (their epoch lines print it).
    for epoch, loss in enumerate(losses, 1):
        for output in outputs:
            assert f"epoch {epoch}/2" in output and f"loss: {loss:.4f}" in output
    assert {"test_loss", "test_accuracy"} <= set(run.data.metrics)
    assert (tmp_path / "w0/model/final_model.keras").is_file()
    assert not (tmp_path / "w1/model").exists()


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "garbage\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cpu_limit_from_the_cgroup(tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert distribute.cpu_limit(tmp_path) == limit


def test_threads_are_left_alone_without_a_limit_or_when_set(tmp_path: Path) -> None:
    assert distribute.fit_threads_to_cpu_limit({}, tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert distribute.fit_threads_to_cpu_limit({"TF_NUM_INTRAOP_THREADS": "4"}, tmp_path) is None


@pytest.mark.slow
def test_sigterm_stops_both_workers_and_the_run_is_killed(tiny_dataset: Path, tmp_path: Path, mlflow_env: str) -> None:
    """Cancel sends SIGTERM to every worker: each ends at its next step (exit 143), worker 0 ends the run KILLED."""
    hosts = f"localhost:{free_port()},localhost:{free_port()}"
    procs = []
    for index in range(2):
        env = {**os.environ, "KTO_WORKER_HOSTS": hosts, "JOB_COMPLETION_INDEX": str(index),
               "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kto_trainer", "--epochs=500", "--batch_size=8", "--image_size=32",
             "--weights=none", f"--working_dir={tmp_path / f'w{index}'}", f"--dataset_dir={tiny_dataset}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    chief = procs[0]
    assert chief.stdout is not None
    lines = []
    for line in chief.stdout:  # until training runs on both (the first epoch line comes after a full epoch)
        lines.append(line)
        if "epoch 1/500" in line:
            break
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    outputs = ["".join(lines) + (procs[0].communicate(timeout=120)[0] or ""), procs[1].communicate(timeout=120)[0]]
    assert [p.returncode for p in procs] == [143, 143], outputs
    [run] = mlflow.search_runs([mlflow_env], output_format="list")
    assert run.info.status == "KILLED"
