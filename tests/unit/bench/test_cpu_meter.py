"""bench/operator_bench_common.py: whose CPU a process tree counts."""

from __future__ import annotations

import operator_bench_common as common


def test_a_process_measured_on_its_own_is_left_out_of_its_parents_tree() -> None:
    # bench (1) -> operator (2) -> its child (3); bench -> kubectl (4); mlflow (5) -> worker (6)
    children = {1: [2, 4], 2: [3], 5: [6]}
    measured = {1, 2, 5}
    assert sorted(common._tree(1, children, measured - {1})) == [1, 4]
    assert sorted(common._tree(2, children, measured - {2})) == [2, 3]
    assert sorted(common._tree(5, children, measured - {5})) == [5, 6]
    assert sorted(common._tree(1, children, set())) == [1, 2, 3, 4]
