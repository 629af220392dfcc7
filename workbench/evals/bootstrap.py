"""Bootstrap confidence intervals for the mean of per-example scores.

Evaluation sets here are small (tens of events or questions), so a mean alone hides how much it
would move on another sample; every reported mean comes with a percentile bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from workbench.errors import InputError

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the sample mean and its percentile bootstrap interval.

    Uses :func:`scipy.stats.bootstrap`. With one value, or all values equal, every resample has
    the same mean, so the interval is that value at both ends: a degenerate interval, not proof
    of certainty.
    """
    try:
        data = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"bootstrap_ci needs numbers: {error}") from error
    if data.ndim != 1 or data.size == 0:
        raise InputError("bootstrap_ci needs a non-empty one-dimensional list of numbers")
    if not np.all(np.isfinite(data)):
        raise InputError("bootstrap_ci got NaN or infinite values; drop or fix them first")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}")
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return mean, mean, mean
    result = stats.bootstrap(
        (data,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return mean, float(interval.low), float(interval.high)
