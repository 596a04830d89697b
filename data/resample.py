"""The one bootstrap of the project: resampling contexts with replacement, and percentile intervals.

A resample of K contexts is a multiplicity vector w (K,) (how often each context is drawn; sum K), so any statistic
that is a weighted sum over contexts (a mean, a cosine of summed shifts, see `realize.verdict`) is recomputed
exactly without copying data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch


def resample_weights(k: int, n: int, seed: int) -> Iterator[torch.Tensor]:
    """`n` multiplicity vectors (k,) long for resampling k contexts with replacement (one seeded generator)."""
    if k < 1 or n < 1:
        raise ValueError(f"resample_weights: expected k >= 1 and n >= 1, got k={k}, n={n}")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield torch.bincount(torch.randint(0, k, (k,), generator=generator), minlength=k)


def percentile_interval(values: Sequence[float], level: float) -> tuple[float, float] | None:
    """The central `level` percentile interval of `values` (None when there are none)."""
    if not values:
        return None
    t = torch.tensor(list(values), dtype=torch.float64)
    return float(t.quantile((1 - level) / 2)), float(t.quantile((1 + level) / 2))


def bootstrap_mean_interval(values: Sequence[float], n: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite `values` ((nan, nan) when there are none)."""
    finite = torch.tensor([v for v in values if math.isfinite(v)], dtype=torch.float64)
    if finite.numel() == 0:
        return math.nan, math.nan
    means = [float((w.double() * finite).sum() / finite.numel()) for w in resample_weights(finite.numel(), n, seed)]
    interval = percentile_interval(means, level)
    assert interval is not None
    return interval
