"""SIGTERM (pod deleted, run cancelled) ends the MLflow run KILLED and the process with 128 + 15."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow

from tests.helpers import wait_for


def test_sigterm_marks_the_run_killed(tiny_dataset: Path, tmp_path: Path, mlflow_env: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kto_trainer", f"--dataset_dir={tiny_dataset}", f"--working_dir={tmp_path}",
         "--epochs=500", "--batch_size=2", "--image_size=32", "--weights=none"],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def training() -> bool:
            assert process.poll() is None, process.communicate()[1][-2000:]
            runs = mlflow.search_runs([mlflow_env], output_format="list")
            # Params logged by autolog mean `fit` has started.
            return bool(runs) and "optimizer_name" in runs[0].data.params

        wait_for(training, 120, "the trainer to reach fit()")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "kto-train: terminated" in err and "Traceback" not in err
    run = mlflow.search_runs([mlflow_env], output_format="list")[0]
    assert run.info.status == "KILLED"
