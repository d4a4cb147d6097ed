from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kto_trainer.data import load_image
from kto_trainer.errors import ConfigError, DatasetError
from kto_trainer.inference import Inference, write_classes
from kto_trainer.model import build_model

from .conftest import png_bytes


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("model")
    model = build_model(3, 32)
    path = model_dir / "final_model.keras"
    model.save(path)
    write_classes(model_dir, ["cat", "dog", "other"])
    return path


def test_predicts_a_label_and_probabilities(saved_model: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes((200, 30, 30), size=50))
    inference = Inference.from_model_dir(saved_model)
    prediction = inference.predict(image)
    assert set(prediction.probabilities) == {"cat", "dog", "other"}
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.__getitem__)
    batch = load_image(image.read_bytes(), 32)
    np.testing.assert_array_equal(batch[0, 5, 5], [200.0, 30.0, 30.0])  # raw RGB pixels go to the model
    expected = inference.model.predict_on_batch(batch)[0]
    np.testing.assert_allclose(list(prediction.probabilities.values()), expected, rtol=1e-5)
    assert inference.predict(image.read_bytes()) == prediction


def test_class_count_must_match(saved_model: Path) -> None:
    with pytest.raises(ConfigError, match="has 3 outputs but 2 classes"):
        Inference(saved_model, ["cat", "dog"])


def test_missing_files(saved_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found"):
        Inference(tmp_path / "none.keras", ["a", "b"])
    with pytest.raises(ConfigError, match="cannot read classes"):
        Inference.from_model_dir(tmp_path / "none.keras")
    with pytest.raises(DatasetError, match="cannot read image"):
        Inference(saved_model, ["a", "b", "c"]).predict(tmp_path / "none.png")
