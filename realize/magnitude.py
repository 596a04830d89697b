"""Magnitude: a steer is a direction and a size, and the size is compared like with like.

A steering vector adds a*v at *every* position; a prompt's shift differs from position to position ("Steer Like the
LLM"). So the natural reference at a layer is the distribution of *per-position* shift norms of the shipped natural
prompts, with the generic "a prompt is present" direction g removed (the part the specific cosine also removes), on
a fixed set of contexts that choose nothing (`realize.setting.MAGNITUDE_CONTEXTS`: never optimization, selection or
test contexts, the same at every budget and seed). The steer's size is |P_g a v| at that layer.

    k  = |P_g a v| / p99(natural)               the factor
    a* = p99(natural) / |P_g v|                  the realizable scale: the largest coefficient natural prompts reach
    beyond natural  <=>  a > c * a*  <=>  k > c  (c = VerdictThresholds.magnitude_factor)

A steer at several layers reports its worst layer (largest k, smallest a*: every layer must reach its size at once).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NaturalNorms:
    """Per-position shift norms of natural prompts at one layer (g removed) on the magnitude contexts."""

    p50: float
    p99: float
    n: int  # positions measured

    @classmethod
    def of(cls, norms: Sequence[float] | torch.Tensor) -> NaturalNorms:
        values = torch.as_tensor(norms, dtype=torch.float64).reshape(-1)
        if values.numel() == 0:
            raise ValueError("norms: expected at least one natural shift norm")
        return cls(float(values.quantile(0.5)), float(values.quantile(0.99)), int(values.numel()))


@dataclass(frozen=True)
class Magnitude:
    """How the steer's size compares with what natural prompts produce at its layer(s)."""

    steer_norm: float  # |P_g a v| (several layers: at the worst layer)
    scale: float  # a, the file's coefficient
    natural_p50: float  # median per-position natural shift norm (g removed)
    natural_p99: float  # its 99th percentile
    factor: float  # k = steer_norm / natural_p99 = a / a*
    realizable_scale: float  # a* = natural_p99 / |P_g v|
    fve: float | None  # 1 - |s - t|^2 / |t|^2 of the best prompt's test-context shift s (None: no best prompt)
    per_layer: tuple[tuple[int, float, float, float], ...] = ()  # several layers: (layer, |P_g a v_i|, p99_i, k_i)

    def beyond(self, c: float) -> bool:
        """The one rule: beyond natural when a > c * a* (equivalently k > c)."""
        return self.factor > c

    def note(self, c: float) -> str:
        """The reason text, stated with the rule it applies (it cannot say 'within' when k > c)."""
        where = "beyond" if self.beyond(c) else "within"
        median = self.steer_norm / self.natural_p50 if self.natural_p50 > 0 else math.inf
        return (f"magnitude {where} natural: the file's a = {self.scale:g} against a realizable scale a* = "
                f"{self.realizable_scale:.3g} (k = a / a* = {self.factor:.2f}, {'>' if self.beyond(c) else '<='} "
                f"{c:g}; |a v| without g {self.steer_norm:.1f} vs the natural per-position p99 {self.natural_p99:.1f}, "
                f"{median:.1f}x the median position's {self.natural_p50:.1f}: a steer adds it at every position)")


def magnitude(steer_norm: float, scale: float, natural: NaturalNorms, fve: float | None) -> Magnitude:
    """Magnitude facts of a steer `scale * v` with |P_g scale v| = steer_norm at one layer."""
    unit_norm = steer_norm / abs(scale) if scale else math.inf
    return Magnitude(steer_norm=steer_norm, scale=scale, natural_p50=natural.p50, natural_p99=natural.p99,
                     factor=steer_norm / natural.p99 if natural.p99 > 0 else math.inf,
                     realizable_scale=natural.p99 / unit_norm if unit_norm > 0 else math.inf, fve=fve)


def magnitude_at(steer_norms: Mapping[int, float], scale: float, natural: Mapping[int, NaturalNorms],
                 fve: float | None) -> Magnitude:
    """A steer at one layer or several (per layer |P_g a v_i| against that layer's natural norms)."""
    parts = {i: magnitude(norm, scale, natural[i], fve) for i, norm in steer_norms.items()}
    if len(parts) == 1:
        return next(iter(parts.values()))
    worst = max(parts.values(), key=lambda m: m.factor)
    return dataclasses.replace(
        worst, realizable_scale=min(m.realizable_scale for m in parts.values()),
        per_layer=tuple((i, m.steer_norm, m.natural_p99, m.factor) for i, m in sorted(parts.items())))
