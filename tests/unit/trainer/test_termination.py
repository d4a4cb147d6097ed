"""SIGTERM is raised at once outside TensorFlow, and only between batches inside it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
from kto_trainer import termination
from kto_trainer.tracking import Terminated


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    previous = termination.install()
    yield
    termination.restore(previous)


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_outside_a_deferred_block_sigterm_raises_at_once() -> None:
    with pytest.raises(Terminated, match="signal 15"):
        sigterm()
        # The handler runs at the next bytecode boundary; this loop gives it one.
        for _ in range(1000):
            pass


def test_inside_a_deferred_block_sigterm_is_raised_on_leaving_it() -> None:
    reached_end_of_block = False
    with pytest.raises(Terminated), termination.deferred():
        sigterm()
        for _ in range(1000):
            pass
        reached_end_of_block = True
    assert reached_end_of_block


def test_an_error_inside_the_block_is_not_replaced_by_the_signal() -> None:
    with pytest.raises(ValueError), termination.deferred():
        sigterm()
        raise ValueError("real failure")


def test_without_sigterm_nothing_is_raised() -> None:
    with termination.deferred():
        termination.raise_if_requested()


class SigtermAtBatch(keras.callbacks.Callback):
    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.finished: list[int] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.finished.append(batch)
        if batch == self.batch:
            sigterm()


def test_fit_stops_at_the_batch_boundary_after_sigterm() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    features = np.zeros((64, 4), dtype="float32")
    labels = np.zeros((64,), dtype="int64")
    sender = SigtermAtBatch(batch=2)
    with pytest.raises(Terminated), termination.deferred():
        model.fit(features, labels, batch_size=4, epochs=50, verbose=0,
                  callbacks=[sender, termination.TerminationCallback()])
    # 16 batches per epoch, 50 epochs: the fit ended in the batch the signal came in.
    assert sender.finished == [0, 1, 2]


def test_restore_forgets_a_recorded_sigterm() -> None:
    with pytest.raises(Terminated), termination.deferred():
        sigterm()
    termination.restore(signal.getsignal(signal.SIGTERM))
    # A later train() in the same process (tests, notebooks) must not die of the old signal.
    with termination.deferred():
        termination.raise_if_requested()
