"""Calibrated realizability verdict: place a vector's test-context result between controls that ran the same search.

Token-space search is flexible, so a raw cosine proves little. Every target (a vector, or a control) gets the same
search; its best prompt is *chosen* on selection contexts and *measured* on test contexts (specific cosine, the
generic prompt-presence direction removed). A vector's value x is then placed between

- nulls: random directions drawn from the layer's natural shift distribution at the vector's norm (values n_i);
- positives: mean shifts of held-out natural prompts whose clusters the retrieval corpus lacks (values p_j).

Direction verdict (thresholds in `VerdictThresholds`):

    no natural candidate   no prompt passed the realism threshold (not a measured 0)
    inconclusive           fewer than `min_controls` usable nulls or positives, or the positives do not beat the
                           nulls by `separation_sd` pooled standard deviations (the controls cannot decide)
    realizable             x >= U(realizable_alpha) and score >= realizable_score
    partially realizable   x >= U(partial_alpha) and score >= partial_score
    not realizable         otherwise

with score = (x - mean(n)) / (mean(p) - mean(n)) clipped to [0, 1], and U(alpha) the one-sided (1 - alpha)
prediction bound for one more null value from n nulls: mean(n) + t_{1-alpha, n-1} * sd(n) * sqrt(1 + 1/n). The
bound grows as n shrinks (Student t), so a handful of nulls is a valid test, just a conservative one.

Magnitude (`Magnitude`): a steer is a direction and a size. The factor k = |a v| / p99 of natural prompts' shift
norms at the layer; k above `magnitude_factor` turns "realizable" into "direction realizable" (and "partially
realizable" into "direction partially realizable"): a prompt reaches the direction, not the size. The realizable
scale a* = p99 / |v| is the largest coefficient at which natural prompts reach the vector's norm.

Generic behavior (vectors, behavior axis; applied in `realize.judging`): a specific recovery below `generic_specific`
turns a (partially) realizable behavior into "generically realizable" (`audit_types.specific_recovery`).

Stability (`joint_bootstrap`): test contexts are resampled jointly for the target and all of its controls, every
value recomputed from per-context evidence (`ContextEvidence`), the whole verdict recomputed; the share of resamples
that give the point verdict is reported beside the score's interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from realize.data.resample import percentile_interval, resample_weights

DirectionVerdict = Literal["realizable", "partially realizable", "not realizable", "inconclusive",
                           "no natural candidate"]
Verdict = Literal["realizable", "partially realizable", "direction realizable", "direction partially realizable",
                  "generically realizable", "not realizable", "inconclusive", "no natural candidate"]
VERDICTS: tuple[Verdict, ...] = ("realizable", "partially realizable", "direction realizable",
                                 "direction partially realizable", "generically realizable", "not realizable",
                                 "inconclusive", "no natural candidate")


@dataclass(frozen=True, kw_only=True)
class VerdictThresholds:
    realizable_score: float = 0.7  # score (0 = null mean, 1 = positive mean) needed for "realizable"
    partial_score: float = 0.35  # score needed for "partially realizable"
    realizable_alpha: float = 0.01  # x must reach the null's one-sided (1 - alpha) prediction bound
    partial_alpha: float = 0.05  # the same for "partially realizable"
    separation_sd: float = 3.0  # positives must beat nulls by this many pooled sd, else "inconclusive"
    min_controls: int = 3  # fewer usable nulls or positives than this: "inconclusive"
    magnitude_factor: float = 1.5  # |a v| / p99 natural shift norm above this: magnitude beyond natural
    min_realism: float | None = None  # realism a prompt needs to count as natural; None = the classifier's threshold
    generic_specific: float = 0.5  # behavior: specific recovery below this (vs unrelated instructions): "generically"

    def __post_init__(self) -> None:
        for name in ("realizable_score", "partial_score", "generic_specific"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {value}")
        if self.min_realism is not None and not 0.0 <= self.min_realism <= 1.0:
            raise ValueError(f"min_realism: expected a value in [0, 1] or None, got {self.min_realism}")
        if self.partial_score > self.realizable_score:
            raise ValueError("partial_score: expected <= realizable_score")
        for name in ("realizable_alpha", "partial_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name}: expected a probability in (0, 0.5), got {value}")
        if self.realizable_alpha > self.partial_alpha:
            raise ValueError("realizable_alpha: expected <= partial_alpha (realizable is the stricter test)")
        if self.separation_sd < 0:
            raise ValueError(f"separation_sd: expected >= 0, got {self.separation_sd}")
        if self.min_controls < 2:
            raise ValueError(f"min_controls: expected >= 2 (a prediction bound needs a spread), got "
                             f"{self.min_controls}")
        if self.magnitude_factor < 1.0:
            raise ValueError(f"magnitude_factor: expected >= 1, got {self.magnitude_factor}")


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


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def prediction_bound(values: Sequence[float], alpha: float) -> float:
    """One-sided (1 - alpha) upper prediction bound for one more draw, from >= 2 values (normal model)."""
    n = len(values)
    if n < 2:
        raise ValueError("values: a prediction bound needs at least 2 values")
    mean, sd = _mean_sd(values)
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


def calibrate(value: float, null: Sequence[float], positive: Sequence[float],
              thresholds: VerdictThresholds) -> Calibration:
    """Place `value` among the controls (at least 2 of each)."""
    if len(null) < 2 or len(positive) < 2:
        raise ValueError("null/positive: expected at least two control values each")
    mu0, sd0 = _mean_sd(null)
    mu1, sd1 = _mean_sd(positive)
    n, m = len(null), len(positive)
    pooled = math.sqrt(((n - 1) * sd0**2 + (m - 1) * sd1**2) / (n + m - 2))
    span = mu1 - mu0
    score = (value - mu0) / span if span > 0 else 0.0
    return Calibration(
        value=value, score=min(max(score, 0.0), 1.0), null_mean=mu0, null_sd=sd0, positive_mean=mu1,
        positive_sd=sd1, n_null=n, n_positive=m,
        realizable_bound=prediction_bound(null, thresholds.realizable_alpha),
        partial_bound=prediction_bound(null, thresholds.partial_alpha),
        separation=span / pooled if pooled > 0 else (math.inf if span > 0 else -math.inf),
        null_percentile=sum(v < value for v in null) / n,
        positive_percentile=sum(v < value for v in positive) / m,
    )


@dataclass(frozen=True)
class DirectionJudgement:
    verdict: DirectionVerdict
    calibration: Calibration | None
    reason: str  # one sentence a user can act on


def judge_direction(value: float | None, null: Sequence[float], positive: Sequence[float],
                    thresholds: VerdictThresholds) -> DirectionJudgement:
    """The direction verdict of one value against its controls (see module docstring)."""
    if value is None or not math.isfinite(value):
        return DirectionJudgement("no natural candidate", None, "no searched prompt passed the realism threshold")
    need = thresholds.min_controls
    if len(null) < need or len(positive) < need:
        return DirectionJudgement("inconclusive", None, f"only {len(null)} usable null and {len(positive)} positive "
                                  f"controls (at least {need} of each are needed)")
    cal = calibrate(value, null, positive, thresholds)
    if not cal.separation >= thresholds.separation_sd:
        return DirectionJudgement("inconclusive", cal, f"the positive controls (mean {cal.positive_mean:.2f}) do not "
                                  f"beat the nulls (mean {cal.null_mean:.2f}) by {thresholds.separation_sd:g} pooled "
                                  f"sd (only {cal.separation:.1f}): the search cannot tell them apart here")
    if value >= cal.realizable_bound and cal.score >= thresholds.realizable_score:
        return DirectionJudgement("realizable", cal, f"specific cos {value:.2f} is above the null's "
                                  f"{100 * (1 - thresholds.realizable_alpha):g}% prediction bound "
                                  f"{cal.realizable_bound:.2f} and at {cal.score:.2f} of the way to the positives")
    if value >= cal.partial_bound and cal.score >= thresholds.partial_score:
        return DirectionJudgement("partially realizable", cal, f"specific cos {value:.2f} is above the null's "
                                  f"{100 * (1 - thresholds.partial_alpha):g}% prediction bound {cal.partial_bound:.2f} "
                                  f"but only {cal.score:.2f} of the way to the positives")
    return DirectionJudgement("not realizable", cal, f"specific cos {value:.2f} against null bound "
                              f"{cal.partial_bound:.2f} and positives {cal.positive_mean:.2f} (score {cal.score:.2f})")


@dataclass(frozen=True)
class Magnitude:
    """How the target's size compares with what natural prompts produce at its layer."""

    target_norm: float  # |a v|
    scale: float  # a, the file's coefficient
    natural_p50: float  # median norm of natural prompts' mean shifts at the layer
    natural_p99: float  # 99th percentile of those norms
    factor: float  # k = |a v| / natural_p99
    realizable_scale: float  # a* = natural_p99 / |v|: the largest coefficient natural prompts reach in norm
    fve: float | None  # 1 - |s - t|^2 / |t|^2 of the best prompt's test-context shift s (None: no best prompt)
    per_layer: tuple[tuple[int, float, float, float], ...] = ()  # several layers: (layer, |a v_i|, p99_i, k_i)


def magnitude_at(targets: Mapping[int, float], scale: float, natural_norms: Mapping[int, Sequence[float]],
                 fve: float | None) -> Magnitude:
    """A steer at one layer or several: per layer |a v_i| against that layer's natural norms. Several layers report
    the worst layer (largest factor k, and the smallest a*, since every layer must reach its norm at once)."""
    parts = {i: magnitude(norm, scale, natural_norms[i], fve) for i, norm in targets.items()}
    if len(parts) == 1:
        return next(iter(parts.values()))
    worst = max(parts.values(), key=lambda m: m.factor)
    return dataclasses.replace(
        worst, realizable_scale=min(m.realizable_scale for m in parts.values()),
        target_norm=math.sqrt(sum(m.target_norm**2 for m in parts.values())),
        per_layer=tuple((i, m.target_norm, m.natural_p99, m.factor) for i, m in sorted(parts.items())))


def magnitude(target_norm: float, scale: float, natural_norms: Sequence[float], fve: float | None) -> Magnitude:
    """Magnitude facts of a target `scale * v` with |scale * v| = target_norm against natural shift norms."""
    if not natural_norms:
        raise ValueError("natural_norms: expected at least one natural shift norm")
    norms = torch.tensor(list(natural_norms), dtype=torch.float64)
    p50, p99 = float(norms.quantile(0.5)), float(norms.quantile(0.99))
    unit_norm = target_norm / abs(scale) if scale else math.inf
    return Magnitude(target_norm=target_norm, scale=scale, natural_p50=p50, natural_p99=p99,
                     factor=target_norm / p99 if p99 > 0 else math.inf,
                     realizable_scale=p99 / unit_norm if unit_norm > 0 else math.inf, fve=fve)


def combine(direction: DirectionVerdict, mag: Magnitude | None, thresholds: VerdictThresholds) -> Verdict:
    """The headline verdict: the direction verdict, qualified when the size is beyond natural."""
    beyond = mag is not None and mag.factor > thresholds.magnitude_factor
    if beyond and direction == "realizable":
        return "direction realizable"
    if beyond and direction == "partially realizable":
        return "direction partially realizable"
    return direction


def magnitude_note(mag: Magnitude, thresholds: VerdictThresholds) -> str:
    if mag.factor > thresholds.magnitude_factor:
        return (f"magnitude {mag.factor:.1f}x beyond natural (|a v| {mag.target_norm:.1f} vs natural p99 "
                f"{mag.natural_p99:.1f}; realizable scale a* = {mag.realizable_scale:.3g} vs the file's "
                f"{mag.scale:g})")
    return f"magnitude within natural (|a v| {mag.target_norm:.1f}, natural p99 {mag.natural_p99:.1f})"


# ---- evidence for the joint bootstrap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextEvidence:
    """What recomputing one item's specific cosine on resampled test contexts needs, without storing shifts.

    With P the projection orthogonal to g, t the target and D_k the best prompt's mean shift on test context k:
    dots[k] = <P D_k, P t / |P t|> and gram[j][k] = <P D_j, P D_k>. For context multiplicities w (a resample),
    the specific cosine of the mean shift is sum_k w_k dots[k] / sqrt(w^T gram w)."""

    dots: tuple[float, ...]
    gram: tuple[tuple[float, ...], ...]

    @classmethod
    def from_shifts(cls, per_context: torch.Tensor, target: torch.Tensor, generic: torch.Tensor) -> ContextEvidence:
        """per_context (K, d), target (d,), generic (d,)."""
        unit_g = generic.double() / generic.double().norm().clamp_min(1e-12)
        proj = per_context.double() - (per_context.double() @ unit_g).unsqueeze(1) * unit_g
        t = target.double() - (target.double() @ unit_g) * unit_g
        t = t / t.norm().clamp_min(1e-12)
        return cls(tuple((proj @ t).tolist()), tuple(tuple(r) for r in (proj @ proj.T).tolist()))

    @property
    def size(self) -> int:
        return len(self.dots)

    def value(self, weights: torch.Tensor | None = None) -> float:
        """Specific cosine with context multiplicities `weights` (K,) (None: every context once)."""
        dots = torch.tensor(self.dots, dtype=torch.float64)
        gram = torch.tensor(self.gram, dtype=torch.float64)
        w = torch.ones_like(dots) if weights is None else weights.double()
        denom = float(w @ gram @ w)
        return float(w @ dots) / math.sqrt(denom) if denom > 1e-24 else 0.0


@dataclass(frozen=True)
class MeanEvidence:
    """Per-test-context values whose mean, floored at `floor`, is the item's value (behavior recovery: an empty
    prompt recovers 0, so no prompt does worse). Contexts where the value is undefined (nan) are skipped."""

    values: tuple[float, ...]
    floor: float = 0.0

    @property
    def size(self) -> int:
        return len(self.values)

    def value(self, weights: torch.Tensor | None = None) -> float:
        v = torch.tensor(self.values, dtype=torch.float64)
        w = torch.ones_like(v) if weights is None else weights.double()
        finite = torch.isfinite(v)
        total = float(w[finite].sum())
        mean = float((w[finite] * v[finite]).sum()) / total if total > 0 else self.floor
        return max(mean, self.floor)


@dataclass(frozen=True)
class LayersEvidence:
    """A steer at several layers: its value is the mean over layers of each layer's specific cosine."""

    parts: tuple[ContextEvidence, ...]

    @property
    def size(self) -> int:
        return self.parts[0].size

    def value(self, weights: torch.Tensor | None = None) -> float:
        return sum(p.value(weights) for p in self.parts) / len(self.parts)


Evidence = ContextEvidence | MeanEvidence | LayersEvidence


@dataclass(frozen=True)
class Stability:
    share_same: float  # share of resamples whose verdict equals the point verdict
    score_interval: tuple[float, float] | None  # percentile interval of the score (None: no calibration)
    value_interval: tuple[float, float] | None  # percentile interval of the target's value


def joint_bootstrap(
    target: Evidence | None,
    null: Sequence[Evidence],
    positive: Sequence[Evidence],
    decide: Callable[[float | None, list[float], list[float]], tuple[str, float | None]],
    *,
    n_resamples: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> Stability:
    """Resample test contexts jointly for the target and its controls; `decide(value | None, null_values,
    positive_values) -> (verdict, score | None)` recomputes the verdict on each resample."""
    items = [e for e in (target, *null, *positive) if e is not None]
    if not items:
        return Stability(1.0, None, None)
    k = items[0].size
    if any(e.size != k for e in items):
        raise ValueError("evidence: every item must come from the same test contexts")
    point, _ = decide(None if target is None else target.value(), [e.value() for e in null],
                      [e.value() for e in positive])
    same, scores, values = 0, [], []
    for w in resample_weights(k, n_resamples, seed):
        value = None if target is None else target.value(w)
        verdict, score = decide(value, [e.value(w) for e in null], [e.value(w) for e in positive])
        same += verdict == point
        if score is not None:
            scores.append(score)
        if value is not None:
            values.append(value)
    return Stability(same / n_resamples, percentile_interval(scores, level), percentile_interval(values, level))
