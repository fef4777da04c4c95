"""Error bars for the reproduction: mean ± std over seeds and bootstrap intervals of paired differences.

A paired difference compares two methods on the same units (the labels of one test set,
or the queries of one retrieval run), so the spread between units that both methods share
cancels out. Over several seeds the bootstrap has two levels: draw seeds with replacement,
then, inside each drawn seed, draw its units with replacement — both the seed-to-seed
variation (a new phantom, a new training run) and the label-to-label variation end up in
the interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 4000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_units: int  # units (labels, queries) over all seeds

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value), NaNs left out."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> np.ndarray:
    """``a - b`` over the units where both are defined (None / NaN marks a unit one side lacks)."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length ({len(a)} vs {len(b)})")
    x = np.array([np.nan if v is None else v for v in a], dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in b], dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep] - y[keep]


def bootstrap_mean(
    per_seed: Sequence[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    rng_seed: int = 0,
) -> Interval:
    """Percentile interval of the mean over seeds of each seed's mean unit difference.

    With one seed this is the ordinary bootstrap over its units. With several, each
    resample draws the seeds with replacement and, independently for every draw, that
    seed's units with replacement. The generator is seeded so the reported interval is
    the same on every run.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in per_seed if len(g) > 0]
    if not groups:
        nan = float("nan")
        return Interval(nan, nan, nan, level, 0, 0)
    rng = np.random.default_rng(rng_seed)
    n_seeds = len(groups)
    # unit resamples: means[s][r, j] = mean of seed s's units, resample r, j-th seed slot
    means = []
    for g in groups:
        picks = rng.integers(0, g.size, size=(resamples, n_seeds, g.size))
        means.append(g[picks].mean(axis=2))
    stacked = np.stack(means)  # seeds × resamples × slots
    if n_seeds > 1:
        chosen = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    else:
        chosen = np.zeros((resamples, 1), dtype=np.int64)
    rows = np.arange(resamples)[:, None]
    slots = np.arange(n_seeds)[None, :]
    estimates = stacked[chosen, rows, slots].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(estimates, [alpha, 1.0 - alpha])
    point = float(np.mean([g.mean() for g in groups]))
    return Interval(point, float(low), float(high), level, n_seeds, int(sum(g.size for g in groups)))
