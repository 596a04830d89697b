"""Calibrated realizability verdict: place a vector's best held-out result between controls.

Token-space search is flexible, so a raw cosine proves little. For each vector the audit runs the same search budget
on (a) random directions of the same norm at the same layer (the null) and (b) shifts produced by real natural
prompts (positive controls), and measures the best *specific* cosine (generic prompt-presence direction removed) on
held-out contexts, among prompts at or above a realism threshold.

    score = (x - mean(null)) / (mean(positive) - mean(null)),  clipped to [0, 1]
    z_null = (x - mean(null)) / std(null)

Verdict (thresholds settable, defaults below):
    realizable            score >= 0.7 and z_null >= 3
    partially realizable  score >= 0.35 and z_null >= 2
    not realizable        otherwise

The score's interval comes from a bootstrap over held-out contexts (resampling contexts, recomputing x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from realize.data.shift import specific_cosine

Verdict = Literal["realizable", "partially realizable", "not realizable"]
VERDICTS: tuple[Verdict, ...] = ("realizable", "partially realizable", "not realizable")


@dataclass(frozen=True, kw_only=True)
class VerdictThresholds:
    realizable_score: float = 0.7  # score at or above which (with z) a vector is realizable
    realizable_z: float = 3.0  # z against the null required for "realizable"
    partial_score: float = 0.35  # score for "partially realizable"
    partial_z: float = 2.0  # z against the null for "partially realizable"
    min_realism: float = 0.5  # prompts below this realism do not count as natural

    def __post_init__(self) -> None:
        for name in ("realizable_score", "partial_score", "min_realism"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {value}")
        if self.partial_score > self.realizable_score:
            raise ValueError("partial_score: expected <= realizable_score")
        if self.partial_z > self.realizable_z:
            raise ValueError("partial_z: expected <= realizable_z")


@dataclass(frozen=True)
class Calibration:
    """Where a value sits between the null and positive-control distributions."""

    value: float
    score: float  # 0 = null mean, 1 = positive mean (clipped)
    z_null: float  # standard deviations above the null mean
    null_percentile: float  # share of null values strictly below `value` (0-1)
    positive_percentile: float  # share of positive-control values strictly below `value` (0-1)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    t = torch.tensor(list(values), dtype=torch.float64)
    std = t.std(unbiased=True).item() if len(values) > 1 else 0.0
    return t.mean().item(), std


def calibrate(value: float, null: Sequence[float], positive: Sequence[float]) -> Calibration:
    """Place `value` between the `null` and `positive` control values (each at least one value)."""
    if not null or not positive:
        raise ValueError("null/positive: expected at least one control value each")
    mu0, sd0 = _mean_std(null)
    mu1, _ = _mean_std(positive)
    span = mu1 - mu0
    score = (value - mu0) / span if span > 1e-9 else float(value > mu0)
    z = (value - mu0) / max(sd0, 1e-3)
    return Calibration(
        value=value,
        score=min(max(score, 0.0), 1.0),
        z_null=z,
        null_percentile=sum(v < value for v in null) / len(null),
        positive_percentile=sum(v < value for v in positive) / len(positive),
    )


def decide(calibration: Calibration, thresholds: VerdictThresholds) -> Verdict:
    """The graded verdict from a calibration."""
    if calibration.score >= thresholds.realizable_score and calibration.z_null >= thresholds.realizable_z:
        return "realizable"
    if calibration.score >= thresholds.partial_score and calibration.z_null >= thresholds.partial_z:
        return "partially realizable"
    return "not realizable"


def bootstrap_specific_cos(
    per_context: torch.Tensor,
    target: torch.Tensor,
    generic: torch.Tensor,
    *,
    n_resamples: int = 200,
    seed: int = 0,
    level: float = 0.9,
) -> tuple[float, float]:
    """Percentile interval of the specific cosine of the mean shift, resampling contexts.

    per_context (K, d): per-context mean shifts of one prompt; target (d,); generic (d,).
    """
    if per_context.ndim != 2 or per_context.shape[0] < 1:
        raise ValueError("per_context: expected a (K, d) tensor with K >= 1")
    generator = torch.Generator().manual_seed(seed)
    k = per_context.shape[0]
    values = []
    for _ in range(n_resamples):
        idx = torch.randint(0, k, (k,), generator=generator)
        values.append(specific_cosine(per_context[idx].mean(dim=0), target, generic))
    values.sort()
    lo = values[math.floor((1 - level) / 2 * (n_resamples - 1))]
    hi = values[math.ceil((1 + level) / 2 * (n_resamples - 1))]
    return lo, hi
