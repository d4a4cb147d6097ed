"""End to end on a local folder and a local MLflow store (the bed version is tests/integration)."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from kto_trainer.annotations import dataset_fingerprint
from kto_trainer.cli import main
from kto_trainer.config import TrainConfig
from kto_trainer.inference import Inference
from kto_trainer.train import train

from .conftest import png_bytes


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in mlflow.MlflowClient().list_artifacts(run_id, path):
        found |= artifact_paths(run_id, info.path) if info.is_dir else {info.path}
    return found


def test_train_continues_the_operator_run_and_logs_everything(
    tiny_dataset: Path, tmp_path: Path, mlflow_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow.MlflowClient()
    run_id = client.create_run(mlflow_env).info.run_id
    client.log_param(run_id, "epochs", "2")  # the operator logs the entry-point parameters first
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    config = TrainConfig(
        epochs=2, batch_size=8, image_size=32, weights="none", seed=3,
        working_dir=str(tmp_path / "work"), dataset_dir=str(tiny_dataset),
    )

    metrics = train(config)

    assert set(metrics) == {"loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"}
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["epochs"] == "2" and params["batch_size"] == "8" and params["split_ratio_train"] == "0.8"
    assert params["image_size"] == "32" and params["weights"] == "none" and params["optimizer_name"] == "adam"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1], key
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert "test_loss" in run.data.metrics
    annotations = (tiny_dataset / "dataset/cats_dogs_others-annotations.json").read_bytes()
    assert run.data.tags["dataset.fingerprint"] == dataset_fingerprint(annotations, 3)
    assert {
        "annotations/extract.json", "annotations/split_train.json", "annotations/split_evaluate.json",
        "annotations/split_test.json", "model_plot.png", "confusion_matrix.png",
    } <= artifact_paths(run_id)
    split = mlflow.artifacts.load_dict(f"runs:/{run_id}/annotations/split_test.json")
    assert len(split) == 3 and sorted(split.values()) == ["cat", "dog", "other"]

    # Local outputs: the course's folders and a model Inference can load.
    work = tmp_path / "work"
    assert len(list((work / "train").rglob("*.png"))) == 24
    prediction = Inference.from_model_dir(work / "model/final_model.keras").predict(png_bytes((200, 10, 10), 40))
    assert prediction.label in {"cat", "dog", "other"}

    # The MLflow model: Keras format, signature, loads and predicts.
    model_uri = run.data.tags["kto.model_uri"]
    info = mlflow.models.get_model_info(model_uri)
    assert "keras" in info.flavors
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32, 32, 3)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "float32"
    assert info.metadata["input"].startswith("raw RGB pixels")
    loaded = mlflow.keras.load_model(model_uri)
    assert loaded.layers[1].name == "vgg16_preprocess"  # the VGG16 preprocessing travels with the model
    raw = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    probabilities = loaded.predict(raw, verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    local = keras.models.load_model(work / "model/final_model.keras")
    np.testing.assert_allclose(local.predict(raw, verbose=0), probabilities, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("malformed", "is not valid JSON"),
        ("empty", "is empty"),
        ("missing-image", "object not found: .*dataset/extract/synthetic-00007.png"),
        ("missing-annotations", "object not found: .*cats_dogs_others-annotations.json"),
    ],
)
def test_cli_reports_bad_datasets_in_one_line(
    breakage: str, message: str, tiny_dataset: Path, tmp_path: Path, mlflow_env: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    annotations = tiny_dataset / "dataset/cats_dogs_others-annotations.json"
    if breakage == "malformed":
        annotations.write_text('{"annotations": [')
    elif breakage == "empty":
        annotations.write_text("")
    elif breakage == "missing-image":
        (tiny_dataset / "dataset/extract/synthetic-00007.png").unlink()
    else:
        annotations.unlink()
    code = main([
        f"--dataset_dir={tiny_dataset}", f"--working_dir={tmp_path / 'work'}", "--weights=none", "--image_size=32",
    ])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kto-train: error: ") and "\n" not in err and "Traceback" not in err
    import re

    assert re.search(message, err), err
    run = mlflow.search_runs([mlflow_env], output_format="list")[0]
    assert run.info.status == "FAILED"


def test_cli_bad_ratios_exit_2_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--split_ratio_train=0.7", "--split_ratio_evaluate", "0.1", "--split_ratio_test=0.1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "split ratios must sum to 1" in err


def test_imagenet_without_a_weights_file_fails_before_downloading(
    tiny_dataset: Path, tmp_path: Path, mlflow_env: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    work = tmp_path / "work"
    code = main([f"--dataset_dir={tiny_dataset}", f"--working_dir={work}", "--weights=imagenet", "--image_size=32"])
    assert code == 2
    assert "need a local copy of the VGG16 notop weights" in capsys.readouterr().err
    assert not (work / "train").exists()
