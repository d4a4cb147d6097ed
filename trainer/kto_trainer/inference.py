"""Step 5: load a saved model and predict the label of one image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .data import load_image
from .errors import ConfigError, DatasetError

CLASSES_FILENAME = "classes.json"


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


class Inference:
    """`Inference(model_path, classes).predict(image)` -> Prediction(label, probabilities)."""

    def __init__(self, model_path: Path | str, classes: Sequence[str]) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"model file not found: {path}")
        self.model = keras.models.load_model(path, compile=False)
        self.classes = list(classes)
        outputs = int(self.model.output_shape[-1])
        if outputs != len(self.classes):
            raise ConfigError(f"model {path} has {outputs} outputs but {len(self.classes)} classes were given")
        self.image_size = int(self.model.input_shape[1])

    @classmethod
    def from_model_dir(cls, model_path: Path | str) -> Inference:
        """Load the model and the `classes.json` that `train()` writes next to it."""
        classes_path = Path(model_path).parent / CLASSES_FILENAME
        try:
            classes = json.loads(classes_path.read_text())["classes"]
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"cannot read classes from {classes_path}: {error}") from None
        return cls(model_path, classes)

    def predict(self, image: Path | str | bytes) -> Prediction:
        if isinstance(image, bytes):
            contents = image
        else:
            try:
                contents = Path(image).read_bytes()
            except OSError as error:
                raise DatasetError(f"cannot read image {image}: {error.strerror}") from None
        # Raw RGB pixels: the model's first layer does the VGG16 preprocessing.
        batch = load_image(contents, self.image_size)
        probabilities = np.asarray(self.model.predict_on_batch(batch))[0]
        best = int(np.argmax(probabilities))
        return Prediction(
            label=self.classes[best],
            probabilities={name: float(p) for name, p in zip(self.classes, probabilities, strict=True)},
        )


def write_classes(model_dir: Path, classes: Sequence[str]) -> Path:
    path = model_dir / CLASSES_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"classes": list(classes)}))
    return path
