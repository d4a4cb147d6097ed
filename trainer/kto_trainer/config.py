"""Training parameters: the course's MLproject parameters plus image size, seed, bucket and weights."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError

RATIO_TOLERANCE = 1e-6
MIN_IMAGE_SIZE = 32  # VGG16 without its top needs at least 32x32 inputs.
DEFAULT_BUCKET = "cats-dogs-other"
ANNOTATION_KEY = "dataset/cats_dogs_others-annotations.json"
EXTRACT_PREFIX = "dataset/extract/"
WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
MODEL_SUFFIXES = (".keras", ".h5")


@dataclass(frozen=True)
class SplitRatios:
    train: float = 0.8
    evaluate: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        for name, value in (("train", self.train), ("evaluate", self.evaluate), ("test", self.test)):
            if not math.isfinite(value) or not 0.0 < value < 1.0:
                raise ConfigError(f"split_ratio_{name} must be strictly between 0 and 1, got {value}")
        total = self.train + self.evaluate + self.test
        if abs(total - 1.0) > RATIO_TOLERANCE:
            raise ConfigError(
                f"split ratios must sum to 1 (tolerance {RATIO_TOLERANCE}): "
                f"{self.train} + {self.evaluate} + {self.test} = {total:.9g}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything `train()` needs. Defaults are the course's MLproject defaults."""

    split_ratio_train: float = 0.8
    split_ratio_evaluate: float = 0.1
    split_ratio_test: float = 0.1
    batch_size: int = 64
    epochs: int = 4
    working_dir: str = "dist"
    model_filename: str = "final_model.keras"
    model_plot_filename: str = "model_plot.png"
    image_size: int = 224
    seed: int = 42
    bucket: str = DEFAULT_BUCKET
    # "none", "imagenet" (from weights_file or the local Keras cache; never downloaded), a local
    # .h5/.weights.h5 path or an s3://bucket/key URL.
    weights: str = WEIGHTS_IMAGENET
    weights_file: str | None = None
    # Read the course layout from a local folder instead of S3 (same keys below that folder).
    dataset_dir: str | None = None
    download_workers: int = 16
    # Mixed precision (float16 compute on a GPU, bfloat16 on CPUs; float32 variables and output).
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        _ = self.ratios  # validates the three ratios
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be >= {MIN_IMAGE_SIZE} (VGG16), got {self.image_size}")
        if self.download_workers < 1:
            raise ConfigError(f"download_workers must be >= 1, got {self.download_workers}")
        if not self.working_dir:
            raise ConfigError("working_dir must not be empty")
        if not self.bucket:
            raise ConfigError("bucket must not be empty")
        for name in ("model_filename", "model_plot_filename"):
            value = getattr(self, name)
            if not value or Path(value).name != value:
                raise ConfigError(f"{name} must be a plain file name, got {value!r}")
        if not self.model_filename.endswith(MODEL_SUFFIXES):
            raise ConfigError(f"model_filename must end with .keras or .h5, got {self.model_filename!r}")
        if not self.model_plot_filename.lower().endswith(".png"):
            raise ConfigError(f"model_plot_filename must end with .png, got {self.model_plot_filename!r}")
        if not self.weights:
            raise ConfigError("weights must be 'none', 'imagenet', a file path or an s3:// URL")

    @property
    def ratios(self) -> SplitRatios:
        return SplitRatios(self.split_ratio_train, self.split_ratio_evaluate, self.split_ratio_test)

    @property
    def work_path(self) -> Path:
        return Path(self.working_dir)

    @property
    def model_dir(self) -> Path:
        return self.work_path / "model"

    @property
    def model_path(self) -> Path:
        return self.model_dir / self.model_filename

    def split_dir(self, split: str) -> Path:
        return self.work_path / split

    def params(self) -> dict[str, str]:
        """Parameters as logged to MLflow (strings, the way MLflow stores them)."""
        # Booleans as the operator renders them (true/false): MLflow refuses a param logged twice differently.
        return {key: str(value).lower() if isinstance(value, bool) else str(value)
                for key, value in asdict(self).items() if value is not None}
