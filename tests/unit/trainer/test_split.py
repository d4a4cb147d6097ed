from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kto_trainer.config import SplitRatios
from kto_trainer.errors import DatasetError
from kto_trainer.split import allocate, check_labels, split_extract

COURSE = SplitRatios(0.8, 0.1, 0.1)


def make_extract(counts: dict[str, int]) -> dict[str, str]:
    return {f"{label}-{i:03d}.png": label for label, n in counts.items() for i in range(n)}


@given(
    count=st.integers(min_value=0, max_value=5000),
    train=st.floats(min_value=0.01, max_value=0.98),
    evaluate_share=st.floats(min_value=0.01, max_value=0.99),
    rotation=st.integers(min_value=0, max_value=5),
)
def test_allocate_sums_to_count_and_stays_within_one_of_quota(
    count: int, train: float, evaluate_share: float, rotation: int
) -> None:
    evaluate = (1 - train) * evaluate_share
    ratios = SplitRatios(train, evaluate, 1 - train - evaluate) if 0 < 1 - train - evaluate < 1 else COURSE
    sizes = allocate(count, ratios, rotation)
    assert sum(sizes) == count
    for size, ratio in zip(sizes, (ratios.train, ratios.evaluate, ratios.test), strict=True):
        assert abs(size - count * ratio) < 1


def test_allocate_is_exact_for_the_course_ratios() -> None:
    assert allocate(10, COURSE) == (8, 1, 1)
    assert allocate(100, COURSE) == (80, 10, 10)


def test_split_is_stratified_disjoint_and_complete() -> None:
    extract = make_extract({"cat": 50, "dog": 30, "other": 20})
    split = split_extract(extract, ["cat", "dog", "other"], COURSE, seed=3)
    assert Counter(split.train.values()) == {"cat": 40, "dog": 24, "other": 16}
    assert Counter(split.evaluate.values()) == {"cat": 5, "dog": 3, "other": 2}
    assert Counter(split.test.values()) == {"cat": 5, "dog": 3, "other": 2}
    names = [set(part) for _, part in split.items()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert {**split.train, **split.evaluate, **split.test} == extract


def test_split_is_seeded_and_independent_of_annotation_order() -> None:
    extract = make_extract({"cat": 20, "dog": 20})
    reordered = dict(reversed(list(extract.items())))
    first = split_extract(extract, ["cat", "dog"], COURSE, seed=7)
    assert split_extract(reordered, ["cat", "dog"], COURSE, seed=7) == first
    assert split_extract(extract, ["cat", "dog"], COURSE, seed=8).test != first.test


def test_small_classes_do_not_all_feed_the_same_split() -> None:
    split = split_extract(make_extract({"a": 5, "b": 5, "c": 5}), ["a", "b", "c"], COURSE, seed=0)
    assert split.evaluate and split.test


def test_unknown_label() -> None:
    with pytest.raises(DatasetError, match=r"unknown label 'horse' for 'h\.png' \(classes: cat, dog\)"):
        split_extract({"c.png": "cat", "h.png": "horse", "d.png": "dog"}, ["cat", "dog"], COURSE, seed=0)


def test_class_with_no_image() -> None:
    with pytest.raises(DatasetError, match="class 'other' has no image"):
        check_labels(make_extract({"cat": 3, "dog": 3}), ["cat", "dog", "other"])


def test_class_with_no_image_in_the_train_split() -> None:
    ratios = SplitRatios(0.2, 0.4, 0.4)
    with pytest.raises(DatasetError, match="class 'dog' has no image in the train split"):
        split_extract(make_extract({"cat": 10, "dog": 1}), ["cat", "dog"], ratios, seed=0)


def test_too_few_images_for_the_ratios() -> None:
    with pytest.raises(DatasetError, match="split is empty: 2 images are too few"):
        split_extract(make_extract({"cat": 1, "dog": 1}), ["cat", "dog"], COURSE, seed=0)
