from __future__ import annotations

import dataclasses
import math

import pytest
from kto_trainer.config import SplitRatios, TrainConfig
from kto_trainer.errors import ConfigError


def test_defaults_are_the_course_mlproject_defaults() -> None:
    config = TrainConfig()
    assert (config.split_ratio_train, config.split_ratio_evaluate, config.split_ratio_test) == (0.8, 0.1, 0.1)
    assert (config.batch_size, config.epochs) == (64, 4)
    assert (config.model_filename, config.model_plot_filename) == ("final_model.keras", "model_plot.png")
    assert config.image_size == 224
    assert config.bucket == "cats-dogs-other"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1 + 5e-7), (1 / 3, 1 / 3, 1 / 3)])
def test_ratios_summing_to_one_within_tolerance(ratios: tuple[float, float, float]) -> None:
    SplitRatios(*ratios)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.8, 0.1, 0.2), "must sum to 1"),
        ((0.7, 0.2, 0.1 + 2e-6), "must sum to 1"),
        ((1.0, 0.0, 0.0), "strictly between 0 and 1"),
        ((0.9, 0.2, -0.1), "strictly between 0 and 1"),
        ((math.nan, 0.1, 0.1), "strictly between 0 and 1"),
    ],
)
def test_bad_ratios(ratios: tuple[float, float, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(split_ratio_train=ratios[0], split_ratio_evaluate=ratios[1], split_ratio_test=ratios[2])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("image_size", 31, "image_size must be >= 32"),
        ("download_workers", 0, "download_workers"),
        ("model_filename", "sub/model.keras", "plain file name"),
        ("model_filename", "model.pb", "must end with .keras or .h5"),
        ("model_plot_filename", "plot.jpg", "must end with .png"),
        ("working_dir", "", "working_dir"),
        ("bucket", "", "bucket"),
        ("weights", "", "weights"),
    ],
)
def test_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_paths_and_params(tmp_path: object) -> None:
    config = TrainConfig(working_dir="/w", model_filename="m.keras")
    assert str(config.model_path) == "/w/model/m.keras"
    assert str(config.split_dir("test")) == "/w/test"
    params = config.params()
    assert params["epochs"] == "4" and params["split_ratio_train"] == "0.8"
    assert "dataset_dir" not in params  # None values are not logged
