from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from kto_trainer import tracking
from kto_trainer.errors import TrainerError


def test_continues_the_run_given_by_mlflow_run_id(mlflow_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    created = mlflow.MlflowClient().create_run(mlflow_env, tags={"kto.dev/trainingrun": "demo"})
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    with tracking.tracked_run() as run:
        assert run.info.run_id == created.info.run_id
    assert mlflow.get_run(created.info.run_id).info.status == "FINISHED"


def test_starts_a_run_in_a_named_experiment(
    mlflow_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # a new experiment's artifacts default to ./mlruns
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"named-{mlflow_env}")
    with tracking.tracked_run() as run:
        pass
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.name == f"named-{mlflow_env}"


def test_unknown_run_id_is_a_clear_error(mlflow_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef0123456789abcdef")
    with pytest.raises(TrainerError, match="cannot open MLflow run 0123456789abcdef"), tracking.tracked_run():
        pass


def test_failure_ends_the_run_failed_with_the_error_tag(mlflow_env: str) -> None:
    with pytest.raises(TrainerError), tracking.tracked_run() as run:
        raise TrainerError("object not found: s3://b/k")
    finished = mlflow.get_run(run.info.run_id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags[tracking.ERROR_TAG] == "TrainerError: object not found: s3://b/k"


def test_sigterm_ends_the_run_killed(mlflow_env: str) -> None:
    with pytest.raises(tracking.Terminated), tracking.tracked_run() as run:
        raise tracking.Terminated("signal 15")
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"


def test_params_already_logged_by_the_operator_are_kept(
    mlflow_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tracking.tracked_run() as run:
        mlflow.log_params({"epochs": "4", "batch_size": "64.0"})
        logged = tracking.log_params_once({"epochs": "4", "batch_size": "64", "seed": "1"})
    assert logged == {"seed": "1"}
    assert mlflow.get_run(run.info.run_id).data.params == {"epochs": "4", "batch_size": "64.0", "seed": "1"}
    assert "param batch_size=64 differs" in capsys.readouterr().err


def test_params_the_operator_logs_between_the_read_and_the_write_are_kept(
    mlflow_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_get_run = mlflow.get_run
    reads: list[str] = []

    def operator_writes_after_the_first_read(run_id: str) -> mlflow.entities.Run:
        seen = real_get_run(run_id)
        reads.append(run_id)
        if len(reads) == 1:  # a restarted operator adopting the running Job logs the TrainingRun's parameters
            mlflow.MlflowClient().log_param(run_id, "sleep", "0")
        return seen

    with tracking.tracked_run() as run:
        monkeypatch.setattr(mlflow, "get_run", operator_writes_after_the_first_read)
        logged = tracking.log_params_once({"sleep": "0.0", "epochs": "1"})
    assert logged == {"epochs": "1"} and len(reads) == 2
    assert real_get_run(run.info.run_id).data.params == {"sleep": "0", "epochs": "1"}
    assert "param sleep=0.0 differs from the run's 0; kept" in capsys.readouterr().err


def test_ensure_epoch_metrics_fills_only_missing_keys(mlflow_env: str) -> None:
    history = {"loss": [0.9, 0.5, 0.3], "accuracy": [0.4, 0.6, 0.9]}
    with tracking.tracked_run() as run:
        for step, value in enumerate(history["loss"]):
            mlflow.log_metric("loss", value, step=step)
        filled = tracking.ensure_epoch_metrics(history, ["loss", "accuracy", "val_loss"])
    assert filled == ["accuracy"]
    client = mlflow.MlflowClient()
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "accuracy")] == [
        (0, 0.4), (1, 0.6), (2, 0.9),
    ]
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3


def test_ensure_epoch_metrics_waits_for_autologs_async_queue(mlflow_env: str) -> None:
    history = {"loss": [0.9, 0.5, 0.3]}
    with tracking.tracked_run() as run:
        for step, value in enumerate(history["loss"]):
            mlflow.log_metrics({"loss": value}, step=step, synchronous=False)  # as autolog's callback does
        assert tracking.ensure_epoch_metrics(history, ["loss"]) == []
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) == 3
