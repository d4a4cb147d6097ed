from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from kto_trainer.cli import parse_config
from kto_trainer.config import TrainConfig
from mlflow.projects._project_spec import load_project

TRAINER_DIR = Path(__file__).resolve().parents[3] / "trainer"
COURSE_PARAMS = {
    "split_ratio_train": 0.8, "split_ratio_evaluate": 0.1, "split_ratio_test": 0.1, "batch_size": 64,
    "epochs": 4, "model_filename": "final_model.keras", "model_plot_filename": "model_plot.png",
}


def test_cli_defaults_are_the_config_defaults() -> None:
    assert parse_config([]) == TrainConfig()


def test_cli_accepts_both_flag_forms_and_all_fields() -> None:
    config = parse_config([
        "--split_ratio_train=0.6", "--split_ratio_evaluate", "0.2", "--split_ratio_test=0.2", "--batch_size=8",
        "--epochs", "2", "--working_dir=/w", "--model_filename=m.keras", "--model_plot_filename=p.png",
        "--image_size=64", "--seed=9", "--bucket=b", "--weights=none", "--weights_file=", "--dataset_dir=/d",
    ])
    assert config == TrainConfig(0.6, 0.2, 0.2, 8, 2, "/w", "m.keras", "p.png", 64, 9, "b", "none", None, "/d")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs=two"], "argument --epochs: invalid int value: 'two'"),
        (["--split_ratio_test=0.3"], "split ratios must sum to 1"),
        (["--image_size=16"], "image_size must be >= 32"),
        (["--unknown=1"], "unrecognized arguments: --unknown=1"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_config(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kto-train: error: ") and message in err and err.count("\n") == 1


def test_python_m_kto_trainer_is_the_cli() -> None:
    """The kto-trainer image's ENTRYPOINT is `python -m kto_trainer`."""
    result = subprocess.run(
        [sys.executable, "-m", "kto_trainer", "--epochs=0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == "kto-train: error: epochs must be >= 1, got 0 (see --help)\n"


def test_mlproject_keeps_the_course_parameters_and_maps_onto_the_cli() -> None:
    project = load_project(str(TRAINER_DIR))
    entry = project.get_entry_point("main")
    for name, default in COURSE_PARAMS.items():
        assert entry.parameters[name].default == default, name
    # Every CLI flag is an MLproject parameter except the tuning knob for download concurrency.
    assert set(entry.parameters) == {f.name for f in fields(TrainConfig)} - {"download_workers"}
    command = entry.compute_command({}, storage_dir="/tmp")
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "kto_trainer"]
    config = parse_config(argv[3:])
    assert config == TrainConfig(working_dir="./dist")
    overridden = parse_config(shlex.split(entry.compute_command({"epochs": 1, "weights": "none"}, "/tmp"))[3:])
    assert (overridden.epochs, overridden.weights) == (1, "none")
