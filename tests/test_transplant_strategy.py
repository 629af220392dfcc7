"""The best-pair rule and the upper bound on hand-made correctness tables."""

import numpy as np
import pytest

from probes.transplant.strategy import BestPair, any_pair_correct, best_pair, pair_accuracy
from workbench.errors import InputError


def table(rows):
    """rows: per item, a list over sources of lists over targets of 0/1."""
    return np.array(rows, dtype=bool)


def test_best_pair_is_the_highest_accuracy():
    # 2 items, sources [0, 1], targets [0, 1]; pair (1, 0) is right on both items.
    correct = table([[[0, 1], [1, 0]],
                     [[0, 0], [1, 1]]])
    assert best_pair(correct, [0, 1], [0, 1]) == BestPair(source=1, target=0, accuracy=1.0)


def test_ties_go_to_smallest_target_then_largest_source():
    sources, targets = [2, 5, 9], [3, 7]
    # Every pair right on the one item: smallest target 3, then largest source 9.
    assert best_pair(np.ones((1, 3, 2), bool), sources, targets) == BestPair(9, 3, 1.0)
    # Ties only on target 7 with sources 2 and 5; target 3 is worse: (5, 7).
    correct = table([[[0, 1], [0, 1], [0, 0]],
                     [[1, 1], [0, 1], [0, 0]]])
    assert best_pair(correct, sources, targets) == BestPair(5, 7, 1.0)
    # Target order in the list does not matter, only the layer number.
    flipped = correct[:, :, ::-1]
    assert best_pair(np.ones((1, 3, 2), bool), sources, [7, 3]).target == 3
    assert best_pair(flipped, sources, [7, 3]) == BestPair(5, 7, 1.0)


def test_pair_accuracy_on_other_items():
    correct = table([[[1, 0]], [[0, 0]], [[1, 1]], [[0, 1]]])
    assert pair_accuracy(correct, [4], [0, 1], BestPair(4, 1, 0.0)) == 0.5
    assert pair_accuracy(correct[2:], [4], [0, 1], BestPair(4, 0, 0.0)) == 0.5
    assert np.isnan(pair_accuracy(correct[:0], [4], [0, 1], BestPair(4, 0, 0.0)))


def test_upper_bound_counts_an_item_if_any_pair_answers_it():
    correct = table([[[0, 0], [0, 1]],
                     [[0, 0], [0, 0]],
                     [[1, 0], [0, 0]]])
    assert any_pair_correct(correct).tolist() == [True, False, True]


def test_bad_tables():
    with pytest.raises(InputError, match="shape"):
        best_pair(np.ones((2, 2), bool), [0, 1], [0])
    with pytest.raises(InputError, match="2 sources"):
        best_pair(np.ones((1, 2, 2), bool), [0, 1, 2], [0, 1])
    with pytest.raises(InputError, match="No items"):
        best_pair(np.ones((0, 1, 1), bool), [0], [0])
