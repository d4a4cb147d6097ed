"""SIGTERM (pod deleted, run cancelled) -> `Terminated`, raised only where Python is in control.

A signal handler's exception surfaces wherever the interpreter next checks for signals. Inside
TensorFlow that can be a C++ call back into Python, which then dies with a SystemError ("bad argument
to internal function", seen once in CI in `model.fit`) instead of the exception, and the run ends FAILED
with exit 1 instead of KILLED with 143. So while Keras runs, the handler only records the request and
`TerminationCallback` raises at the next batch boundary (milliseconds to a few seconds, well inside
Kubernetes' 30 s grace period).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

import keras

from .tracking import Terminated

Handler = Callable[[int, FrameType | None], Any] | int | None


@dataclass
class _State:
    signum: int | None = None
    deferring: int = 0


_state = _State()


def _handle(signum: int, frame: FrameType | None) -> None:
    _state.signum = signum
    if not _state.deferring:
        raise Terminated(f"signal {signum}")


def _reset() -> None:
    _state.signum = None
    _state.deferring = 0


def install() -> Handler:
    """Route SIGTERM here (main thread only); returns the previous handler for `restore`."""
    _reset()
    return signal.signal(signal.SIGTERM, _handle)


def reclaim() -> None:
    """Route SIGTERM here again if `install` did, keeping what was recorded. TensorFlow's coordination service
    (a cluster's MultiWorkerMirroredStrategy) installs its own C++ SIGTERM handler for its preemption notices,
    which made workers ignore SIGTERM: call this once the strategy exists."""
    if signal.getsignal(signal.SIGTERM) is _handle:  # Python's record of it: ours, whatever C++ did since
        signal.signal(signal.SIGTERM, _handle)


def restore(previous: Handler) -> None:
    """Put back the previous handler and forget a recorded SIGTERM (later `train` calls in this process run)."""
    signal.signal(signal.SIGTERM, previous)
    _reset()


def raise_if_requested() -> None:
    if _state.signum is not None:
        raise Terminated(f"signal {_state.signum}")


def requested() -> bool:
    """A SIGTERM was received (and deferred)."""
    return _state.signum is not None


def stop() -> NoReturn:
    """End like a SIGTERM, asked by this process or by another worker of its cluster (see multiworker)."""
    raise Terminated(f"signal {_state.signum}" if _state.signum is not None else "another worker was stopped")


@contextmanager
def deferred() -> Iterator[None]:
    """Inside: a SIGTERM is only recorded; it is raised by `raise_if_requested` or on leaving the block."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    raise_if_requested()


class TerminationCallback(keras.callbacks.Callback):
    """Raises `Terminated` between batches of fit / evaluate / predict once SIGTERM was received."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_requested()

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_requested()

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_requested()
