"""XTransplant read-outs over per-item correctness tables: the offline best pair and the
instance-aware upper bound.

Pure numpy on arrays shaped (items, sources, targets) of booleans, so the rules (tie breaking, the
sample / unseen split) are testable on hand-made tables without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from workbench.errors import InputError


@dataclass(frozen=True)
class BestPair:
    """The (source, target) pair with the highest accuracy on the items it was chosen on."""

    source: int
    target: int
    accuracy: float


def _check_table(correct: np.ndarray, sources: Sequence[int], targets: Sequence[int]) -> np.ndarray:
    table = np.asarray(correct, dtype=bool)
    if table.ndim != 3:
        raise InputError(f"A correctness table has shape (items, sources, targets); got {table.shape}.")
    if table.shape[1:] != (len(sources), len(targets)):
        raise InputError(
            f"The table covers {table.shape[1]} sources x {table.shape[2]} targets, "
            f"but {len(sources)} sources and {len(targets)} targets were named."
        )
    if table.shape[0] == 0:
        raise InputError("No items to choose a transplant pair on.")
    return table


def best_pair(correct: np.ndarray, sources: Sequence[int], targets: Sequence[int]) -> BestPair:
    """The pair with the highest mean correctness; ties go to the smallest target layer, then to
    the largest source layer (the rule of the method spec, so a choice is reproducible)."""
    table = _check_table(correct, sources, targets)
    acc = table.mean(axis=0)
    top = acc.max()
    ties = [(i, j) for i in range(len(sources)) for j in range(len(targets)) if np.isclose(acc[i, j], top)]
    i, j = min(ties, key=lambda ij: (targets[ij[1]], -sources[ij[0]]))
    return BestPair(int(sources[i]), int(targets[j]), float(acc[i, j]))


def pair_accuracy(correct: np.ndarray, sources: Sequence[int], targets: Sequence[int], pair: BestPair) -> float:
    """Accuracy of one fixed pair on the items of `correct` (NaN when there are none)."""
    table = np.asarray(correct, dtype=bool)
    if table.shape[0] == 0:
        return float("nan")
    return float(table[:, list(sources).index(pair.source), list(targets).index(pair.target)].mean())


def any_pair_correct(correct: np.ndarray) -> np.ndarray:
    """Per item: does at least one (source, target) pair answer it? The instance-aware oracle."""
    table = np.asarray(correct, dtype=bool)
    if table.ndim != 3:
        raise InputError(f"A correctness table has shape (items, sources, targets); got {table.shape}.")
    return table.reshape(table.shape[0], -1).any(axis=1)
