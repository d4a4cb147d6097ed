"""Step 2a: seeded, stratified train/evaluate/test split of `extract` by the three ratios."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .annotations import Extract
from .config import SplitRatios
from .errors import DatasetError

SPLIT_NAMES = ("train", "evaluate", "test")


@dataclass(frozen=True)
class Split:
    train: Extract
    evaluate: Extract
    test: Extract

    def items(self) -> Iterator[tuple[str, Extract]]:
        yield from (("train", self.train), ("evaluate", self.evaluate), ("test", self.test))


def allocate(count: int, ratios: SplitRatios, rotation: int = 0) -> tuple[int, int, int]:
    """Split `count` into three integers proportional to the ratios (largest remainder method).

    Ties on the remainder are broken starting at a different split for each class (`rotation`), so small
    classes do not all hand their spare image to the same split.
    """
    quotas = [count * ratios.train, count * ratios.evaluate, count * ratios.test]
    sizes = [math.floor(quota) for quota in quotas]
    order = sorted(range(3), key=lambda i: (-(quotas[i] - sizes[i]), (i - rotation) % 3))
    for i in order[: count - sum(sizes)]:
        sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def check_labels(extract: Extract, classes: Sequence[str]) -> None:
    """Every label must be a known class and every class must have at least one image."""
    known = set(classes)
    for file_name, label in extract.items():
        if label not in known:
            raise DatasetError(f"unknown label {label!r} for {file_name!r} (classes: {', '.join(classes)})")
    present = set(extract.values())
    for name in classes:
        if name not in present:
            raise DatasetError(f"class {name!r} has no image in the annotation file")


def split_extract(extract: Extract, classes: Sequence[str], ratios: SplitRatios, seed: int) -> Split:
    """Stratified split: each class is shuffled (seeded) and cut by the ratios on its own."""
    check_labels(extract, classes)
    rng = random.Random(seed)
    parts: tuple[Extract, Extract, Extract] = ({}, {}, {})
    for rotation, name in enumerate(classes):
        # Sorting first makes the result depend only on the content, not on the annotation order.
        files = sorted(file_name for file_name, label in extract.items() if label == name)
        rng.shuffle(files)
        n_train, n_evaluate, _ = allocate(len(files), ratios, rotation)
        for index, file_name in enumerate(files):
            part = 0 if index < n_train else 1 if index < n_train + n_evaluate else 2
            parts[part][file_name] = name
    split = Split(*parts)
    for split_name, part_extract in split.items():
        if not part_extract:
            raise DatasetError(
                f"the {split_name} split is empty: {len(extract)} images are too few for ratios "
                f"{ratios.train}/{ratios.evaluate}/{ratios.test}"
            )
    missing = [name for name in classes if name not in set(split.train.values())]
    if missing:
        raise DatasetError(f"class {missing[0]!r} has no image in the train split; add images")
    return split
