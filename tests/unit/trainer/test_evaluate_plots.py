from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from kto_trainer.evaluate import confusion_matrix, evaluate_model, predict_labels
from kto_trainer.plots import plot_confusion_matrix, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_counts() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def fixed_model() -> keras.Model:
    """Predicts the class whose input feature is largest (identity kernel, softmax)."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(3, activation="softmax", use_bias=False, kernel_initializer="identity")
    model = keras.Model(inputs, dense(inputs * 10.0))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_evaluate_and_predict_labels() -> None:
    features = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    labels = np.array([0, 1, 2, 0])
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(3)
    metrics = evaluate_model(fixed_model(), dataset)
    assert set(metrics) == {"test_loss", "test_accuracy"}
    assert metrics["test_accuracy"] == 0.75
    truth, predicted = predict_labels(fixed_model(), dataset)
    assert truth.tolist() == [0, 1, 2, 0] and predicted.tolist() == [0, 1, 2, 2]


def test_plots_are_pngs(tmp_path: Path) -> None:
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.4, 0.8], "val_accuracy": [0.3, 0.7]}
    first = plot_history(history, tmp_path / "plots/model_plot.png")
    second = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["cat", "dog"], tmp_path / "cm.png")
    for path in (first, second):
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000


def test_history_plot_without_validation(tmp_path: Path) -> None:
    path = plot_history({"loss": [1.0], "accuracy": [0.5]}, tmp_path / "h.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
