"""Step 4a: evaluation on the test split and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def evaluate_model(
    model: keras.Model, dataset: tf.data.Dataset, *callbacks: keras.callbacks.Callback
) -> dict[str, float]:
    results = model.evaluate(dataset, verbose=0, return_dict=True, callbacks=list(callbacks))
    return {"test_loss": float(results["loss"]), "test_accuracy": float(results["accuracy"])}


def predict_labels(
    model: keras.Model, dataset: tf.data.Dataset, between_batches: Callable[[], None] = lambda: None
) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices, predicted class indices) over a non-shuffled dataset."""
    truth: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    for images, labels in dataset:
        between_batches()
        probabilities = model.predict_on_batch(images)
        truth.append(np.asarray(labels))
        predicted.append(np.argmax(probabilities, axis=-1))
    return np.concatenate(truth), np.concatenate(predicted)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """matrix[i, j] = number of images of class i predicted as class j."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix
