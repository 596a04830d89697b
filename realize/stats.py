"""The statistics the verdict's rules read, computed before any rule runs.

- numerics: Student-t quantiles (via the regularized incomplete beta), mean and sd, the one-sided prediction bound
  for one more draw from a small sample;
- `calibrate` / `place`: where a value sits among its null and positive controls (`Calibration`);
- `sibling_margin` / `median_margin` / `margin_spread`: the form test's margins (a prompt over its form siblings,
  the positives' median of them, and a margin's one-sided bootstrap spread);
- `AxisInputs` (an item's numbers on one axis) and `axis_case` (them with their statistics: `AxisCase`), for the
  point and for every joint resample of the test contexts.

`realize.verdict` applies the rules to these; it computes no statistic itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal


@lru_cache(maxsize=4096)
def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` >= 1 degrees of freedom (bisection on the CDF; |error| < 1e-9)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"student_t_quantile: expected 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)

    def cdf(t: float) -> float:  # via the regularized incomplete beta: P(T <= t) = 1 - I_x(df/2, 1/2) / 2
        x = df / (df + t * t)
        return 1.0 - 0.5 * _betainc(df / 2.0, 0.5, x)

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + numerator / (c if abs(c) > 1e-300 else 1e-300)
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0) / a


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def prediction_bound(values: Sequence[float], alpha: float) -> float:
    """One-sided (1 - alpha) upper prediction bound for one more draw, from >= 2 values (normal model)."""
    n = len(values)
    if n < 2:
        raise ValueError("values: a prediction bound needs at least 2 values")
    mean, sd = mean_sd(values)
    return mean + student_t_quantile(1.0 - alpha, n - 1) * sd * math.sqrt(1.0 + 1.0 / n)


@dataclass(frozen=True)
class Calibration:
    """Where a value sits among the null and positive controls (all on test contexts)."""

    value: float
    score: float  # 0 = null mean, 1 = positive mean (clipped to [0, 1])
    null_mean: float
    null_sd: float
    positive_mean: float
    positive_sd: float
    n_null: int
    n_positive: int
    realizable_bound: float  # null prediction bound at realizable_alpha
    partial_bound: float  # null prediction bound at partial_alpha
    separation: float  # (positive mean - null mean) / pooled sd
    null_percentile: float  # share of null values strictly below `value`
    positive_percentile: float  # share of positive values strictly below `value`


def calibrate(value: float, null: Sequence[float], positive: Sequence[float], *, realizable_alpha: float,
              partial_alpha: float) -> Calibration:
    """Place `value` among the controls (at least 2 of each)."""
    if len(null) < 2 or len(positive) < 2:
        raise ValueError("null/positive: expected at least two control values each")
    mu0, sd0 = mean_sd(null)
    mu1, sd1 = mean_sd(positive)
    n, m = len(null), len(positive)
    pooled = math.sqrt(((n - 1) * sd0**2 + (m - 1) * sd1**2) / (n + m - 2))
    span = mu1 - mu0
    score = (value - mu0) / span if span > 0 else 0.0
    return Calibration(
        value=value, score=min(max(score, 0.0), 1.0), null_mean=mu0, null_sd=sd0, positive_mean=mu1,
        positive_sd=sd1, n_null=n, n_positive=m,
        realizable_bound=prediction_bound(null, realizable_alpha), partial_bound=prediction_bound(null, partial_alpha),
        separation=span / pooled if pooled > 0 else (math.inf if span > 0 else -math.inf),
        null_percentile=sum(v < value for v in null) / n,
        positive_percentile=sum(v < value for v in positive) / m,
    )


@dataclass(frozen=True)
class Placed:
    """A value, its controls' values, and its calibration among them (None: no finite value, or fewer than 2
    values of either control: no statistic exists)."""

    value: float | None
    null: tuple[float, ...]
    positive: tuple[float, ...]
    calibration: Calibration | None


def place(value: float | None, null: Sequence[float], positive: Sequence[float], *, realizable_alpha: float,
          partial_alpha: float) -> Placed:
    """`value` among its controls, with every statistic the rules read."""
    null, positive = tuple(null), tuple(positive)
    calibration = None
    if value is not None and math.isfinite(value) and len(null) >= 2 and len(positive) >= 2:
        calibration = calibrate(value, null, positive, realizable_alpha=realizable_alpha, partial_alpha=partial_alpha)
    return Placed(value, null, positive, calibration)


ContentReference = Literal["mean", "nearest"]
CONTENT_REFERENCES: tuple[ContentReference, ...] = ("mean", "nearest")


def sibling_margin(value: float | None, siblings: Sequence[float], reference: ContentReference) -> float | None:
    """A prompt's content-test value minus its form siblings' mean, or minus the nearest (largest) sibling's
    (None: no value or no finite sibling)."""
    finite = [v for v in siblings if math.isfinite(v)]
    if value is None or not math.isfinite(value) or not finite:
        return None
    return value - (max(finite) if reference == "nearest" else sum(finite) / len(finite))


def margin_spread(point: float | None, resampled: Sequence[float | None], level: float) -> float:
    """One-sided spread of a sibling margin under joint resampling of the test contexts: the distance from the
    point margin down to the (1 - level) quantile of its resampled values (0 when they never move below it; nan:
    no point margin or no finite resampled margin)."""
    finite = sorted(m for m in resampled if m is not None and math.isfinite(m))
    if point is None or not math.isfinite(point) or not finite:
        return math.nan
    return max(point - _quantile(finite, 1.0 - level), 0.0)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (torch.quantile's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def median_margin(own: Sequence[tuple[float, Sequence[float]]], reference: ContentReference) -> float | None:
    """The median margin by which prompts (value, their siblings' values) beat their form siblings (None: none
    measured): the form test's calibration, from the positives' own prompts."""
    margins = [m for value, siblings in own if (m := sibling_margin(value, siblings, reference)) is not None]
    return statistics.median(margins) if margins else None


@dataclass(frozen=True)
class AxisInputs:
    """The numbers one item's verdict on one axis is decided on (test contexts, unfloored)."""

    value: float | None  # x: the best prompt's value (None: no natural candidate)
    null: tuple[float, ...]  # the usable nulls' values
    positive: tuple[float, ...]  # the usable positives' values
    content_value: float | None  # the best prompt in the content test's metric
    siblings: tuple[float, ...]  # its form siblings in that metric
    unrelated: float | None  # the best unrelated instruction's value g (None: no panel)
    spread: float  # one-sided paired bootstrap spread of x - g (nan: none)
    margin_spread: float  # one-sided bootstrap spread of the best prompt's sibling margin (nan: none)
    true_margin: float | None  # the form test's calibration: the positives' median own-minus-sibling margin
    beyond_magnitude: bool  # activation: a > magnitude_factor * a*
    inert: bool  # behavior: the steer barely changes the outputs (nothing to reproduce)
    what: str  # the value's name in reasons ("specific cos", "recovery")
    content_cosine: float | None = None  # the best prompt's content cosine against its siblings (None: not asked)
    true_cosine: float | None = None  # its calibration: the positives' median content cosine (None: none)

    def resampled(self, values: Sequence[Sequence[float]]) -> AxisInputs:
        """These inputs on one joint resample: `values` per group, in the order of `AxisInputs`' measured fields
        ([item], nulls, positives, siblings, [unrelated], [item in the content metric], [its content cosine]; the
        last group may be absent)."""
        cosine = values[6] if len(values) > 6 else ()
        return replace(self, value=values[0][0] if values[0] else None, null=tuple(values[1]),
                       positive=tuple(values[2]), siblings=tuple(values[3]),
                       unrelated=values[4][0] if values[4] else None,
                       content_value=values[5][0] if values[5] else None,
                       content_cosine=cosine[0] if cosine else self.content_cosine)


@dataclass(frozen=True)
class AxisCase:
    """An item's inputs on one axis with their statistics: the value placed among the controls, and the best
    prompt's margin over its form siblings."""

    inputs: AxisInputs
    direction: Placed
    margin: float | None


def axis_case(inputs: AxisInputs, *, realizable_alpha: float, partial_alpha: float,
              reference: ContentReference) -> AxisCase:
    """The statistics of `inputs` the rules read."""
    direction = place(inputs.value, inputs.null, inputs.positive, realizable_alpha=realizable_alpha,
                      partial_alpha=partial_alpha)
    return AxisCase(inputs, direction, sibling_margin(inputs.content_value, inputs.siblings, reference))
