"""The training loop of a worker in a cluster (MultiWorkerMirroredStrategy).

Keras 3's `fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585, still so in Keras
3.15: it all-reduces the first input batch as one tensor to build the model, then reduces scalar metrics along
an axis they do not have). So a cluster's workers train with this loop instead: the same compiled model, loss,
optimizer and global batch as `fit` (the per-replica loss is the sum over its examples divided by the global
batch, and the optimizer all-reduces the gradients with a sum, so each step is one step on the global batch),
with the loss and accuracy summed over every worker's examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import keras
import tensorflow as tf

EpochLogs = dict[str, float]


def _totals(loss_fn: keras.losses.Loss, labels: tf.Tensor, weights: tf.Tensor, probabilities: tf.Tensor,
            stop: tf.Tensor) -> tf.Tensor:
    """[loss sum, correct predictions, examples, stop requests] of one replica's batch, padding (weight 0) left
    out."""
    weighted_loss = tf.reduce_sum(tf.cast(loss_fn(labels, probabilities), tf.float32) * weights)
    predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32) * weights)
    return tf.stack([weighted_loss, correct, tf.reduce_sum(weights), stop])


def _logs(sums: tf.Tensor, prefix: str = "") -> EpochLogs:
    loss, correct, examples = (float(v) for v in sums[:3])
    count = max(examples, 1.0)
    return {f"{prefix}loss": loss / count, f"{prefix}accuracy": correct / count}


def fit_cluster(
    model: keras.Model, strategy: tf.distribute.Strategy, train: Iterable[Any], evaluate: Iterable[Any],
    *, epochs: int, global_batch: int, on_epoch: Callable[[int, EpochLogs], None],
    stop_requested: Callable[[], bool], stop: Callable[[], None],
) -> dict[str, list[float]]:
    """Train `model` (built and compiled under `strategy`) for `epochs` on the distributed datasets; the
    per-epoch history, as Keras' History has it (loss, accuracy, val_loss, val_accuracy).

    Stopping is agreed: each step's all-reduce also sums the workers' `stop_requested()`, and every worker calls
    `stop()` (which raises) after the same step once any asked. A worker leaving on its own would leave the
    others waiting in the next all-reduce for it until they are killed."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=False, reduction=None)
    optimizer = model.optimizer
    # Its variables in cross-replica context, before the first step (the strategy mirrors them).
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    def train_replica(images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, stop_flag: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            totals = _totals(loss_fn, labels, weights, model(images, training=True), stop_flag)
            # Loss scaling under mixed float16 (identity otherwise); apply_gradients unscales.
            scaled = optimizer.scale_loss(totals[0] / global_batch)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return totals

    def evaluate_replica(images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, stop_flag: tf.Tensor) -> tf.Tensor:
        return _totals(loss_fn, labels, weights, model(images, training=False), stop_flag)

    @tf.function
    def train_step(batch: Any, stop_flag: tf.Tensor) -> tf.Tensor:
        per_replica = strategy.run(train_replica, args=(*batch, stop_flag))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function
    def evaluate_step(batch: Any, stop_flag: tf.Tensor) -> tf.Tensor:
        per_replica = strategy.run(evaluate_replica, args=(*batch, stop_flag))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def run(dataset: Iterable[Any], step: Callable[[Any, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        sums = tf.zeros(4)
        for batch in dataset:
            totals = step(batch, tf.constant(1.0 if stop_requested() else 0.0))
            if float(totals[3]) > 0:
                stop()
            sums += totals
        return sums

    history: dict[str, list[float]] = {}
    for epoch in range(epochs):
        started = time.monotonic()
        logs = {**_logs(run(train, train_step)), **_logs(run(evaluate, evaluate_step), "val_")}
        logs["seconds"] = time.monotonic() - started
        for key, value in logs.items():
            if key != "seconds":
                history.setdefault(key, []).append(value)
        on_epoch(epoch, logs)
    return history
