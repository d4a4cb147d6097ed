"""Step 4b: history and confusion-matrix plots (matplotlib's Agg canvas, no display, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def plot_history(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation (the course's two stacked plots)."""
    figure = Figure(figsize=(6.4, 6.4), layout="tight")
    for row, (metric, title) in enumerate((("loss", "Cross Entropy Loss"), ("accuracy", "Classification Accuracy"))):
        axes = figure.add_subplot(2, 1, row + 1)
        axes.set_title(title)
        for key, colour, label in ((metric, "blue", "train"), (f"val_{metric}", "orange", "validation")):
            values = list(history.get(key, []))
            if values:
                axes.plot(range(1, len(values) + 1), values, color=colour, marker="o", label=label)
        axes.set_xlabel("epoch")
        axes.legend(loc="best")
    return _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    figure = Figure(figsize=(1.6 + 1.1 * len(classes), 1.2 + 1.1 * len(classes)), layout="tight")
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(classes))
    axes.set_xticks(ticks, labels=list(classes))
    axes.set_yticks(ticks, labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (test split)")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, str(value), ha="center", va="center",
                  color="white" if value > threshold else "black")
    return _save(figure, path)
