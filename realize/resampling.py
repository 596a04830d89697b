"""Per-test-context evidence of a measured prompt, and the joint bootstrap over test contexts.

An evidence object keeps just enough of a prompt's per-context numbers to recompute its value under any resample of
the test contexts (a multiplicity vector w (K,), `realize.data.resample.resample_weights`), without storing shifts
or logits:

- `ContextEvidence` (activation, one layer): the specific cosine of the mean shift, sum_k w_k dots[k] / sqrt(w' G w);
- `LayersEvidence` (activation, several layers): the mean over layers of each layer's specific cosine;
- `FormEvidence` (activation, the content cosine): a prompt against its form siblings, per layer, from the inner
  products of their per-context shifts (so the cosine of mean shifts is recomputed on every resample);
- `RatioEvidence` (behavior): the pooled recovery 1 - sum_k w_k KL(S||P)_k / sum_k w_k KL(S||B)_k, never floored
  (a prompt that makes the steered text less likely than no prompt scores below 0, and that is a measurement).

`resampled_values` resamples the test contexts once per draw for *every* group of evidence an item's verdict rests
on (the item, its nulls, its positives, its siblings, ...), so the verdict is recomputed on paired data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from realize.data.resample import resample_weights


class Evidence(Protocol):
    """What the joint bootstrap needs of a measured prompt."""

    @property
    def size(self) -> int:  # number of test contexts
        ...

    def value(self, weights: torch.Tensor | None = None) -> float:  # the value with context multiplicities (K,)
        ...

    def values(self, weights: torch.Tensor) -> torch.Tensor:  # (R, K) multiplicities -> (R,) values, at once
        ...


def specific_metric(shifts: torch.Tensor, target: torch.Tensor, generic: torch.Tensor,
                    whiten: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifts (..., d) with the generic direction g (d,) projected out (and, with `whiten` (d, d), whitened), and the
    unit target (d,) in the same metric, float64: the space every specific cosine is measured in."""
    unit_g = generic.double() / generic.double().norm().clamp_min(1e-12)
    proj = shifts.double() - (shifts.double() @ unit_g).unsqueeze(-1) * unit_g
    t = target.double() - (target.double() @ unit_g) * unit_g
    if whiten is not None:
        proj, t = proj @ whiten.double(), t @ whiten.double()
    return proj, t / t.norm().clamp_min(1e-12)


@dataclass(frozen=True)
class ContextEvidence:
    """Specific cosine at one layer. With P the projection orthogonal to g, t the target and D_k the prompt's mean
    shift on test context k: dots[k] = <P D_k, P t / |P t|> and gram[j][k] = <P D_j, P D_k>."""

    dots: tuple[float, ...]
    gram: tuple[tuple[float, ...], ...]

    @classmethod
    def from_shifts(cls, per_context: torch.Tensor, target: torch.Tensor, generic: torch.Tensor,
                    whiten: torch.Tensor | None = None) -> ContextEvidence:
        """per_context (K, d), target (d,), generic (d,); `whiten` (d, d): measure in the whitened metric (both
        projected vectors multiplied by it, `realize.setting.whitening`)."""
        proj, t = specific_metric(per_context, target, generic, whiten)
        return cls(tuple((proj @ t).tolist()), tuple(tuple(r) for r in (proj @ proj.T).tolist()))

    @property
    def size(self) -> int:
        return len(self.dots)

    def value(self, weights: torch.Tensor | None = None) -> float:
        w = torch.ones(self.size, dtype=torch.long) if weights is None else weights
        return float(self.values(w.reshape(1, -1))[0])

    def values(self, weights: torch.Tensor) -> torch.Tensor:
        w = weights.double()
        dots = torch.tensor(self.dots, dtype=torch.float64)
        gram = torch.tensor(self.gram, dtype=torch.float64)
        denom = ((w @ gram) * w).sum(dim=1)
        return torch.where(denom > 1e-24, (w @ dots) / denom.clamp_min(1e-24).sqrt(), torch.zeros_like(denom))


@dataclass(frozen=True)
class LayersEvidence:
    """A steer at several layers: the mean over layers of each layer's specific cosine."""

    parts: tuple[ContextEvidence, ...]

    @property
    def size(self) -> int:
        return self.parts[0].size

    def value(self, weights: torch.Tensor | None = None) -> float:
        w = torch.ones(self.size, dtype=torch.long) if weights is None else weights
        return float(self.values(w.reshape(1, -1))[0])

    def values(self, weights: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.values(weights) for p in self.parts]).mean(dim=0)


@dataclass(frozen=True)
class RatioEvidence:
    """Pooled behavior recovery: per test context, the summed KL(S||P) over the steered text's positions
    (`numerators`) and the summed KL(S||B) (`denominators`). nan when the resample's denominators sum to ~0."""

    numerators: tuple[float, ...]
    denominators: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.numerators)

    def value(self, weights: torch.Tensor | None = None) -> float:
        w = torch.ones(self.size, dtype=torch.long) if weights is None else weights
        return float(self.values(w.reshape(1, -1))[0])

    def values(self, weights: torch.Tensor) -> torch.Tensor:
        w = weights.double()
        num = torch.tensor(self.numerators, dtype=torch.float64)
        den = torch.tensor(self.denominators, dtype=torch.float64)
        total = w @ den
        return torch.where(total > 1e-9, 1.0 - (w @ num) / total.clamp_min(1e-9), torch.full_like(total, math.nan))


@dataclass(frozen=True)
class FormEvidence:
    """The content cosine of a prompt (index 0) against its form siblings (1..n), one entry per layer, the value the
    mean over layers. With X_ak the projected (whitened) mean shift of prompt a on test context k and u the unit
    target at a layer: dots[l][a][k] = <X_ak, u> and gram[l][a K + j][b K + k] = <X_aj, X_bk>. On context
    multiplicities w: m_a = sum_k w_k X_ak, e_a = m_a / |m_a|, s = the siblings' mean of e_a, and the value is
    cos(e_0 - s, u - s): does what the prompt's words add to its form point where the steer departs from that form?
    nan without a sibling or when a mean shift (or a difference) vanishes."""

    dots: tuple[tuple[tuple[float, ...], ...], ...]
    gram: tuple[tuple[tuple[float, ...], ...], ...]

    @classmethod
    def from_shifts(cls, per_layer: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> FormEvidence:
        """Per layer: (shifts (A, K, d) of the prompt then its siblings, in the metric of `specific_metric`; the unit
        target (d,) in that metric). Stored to 7 significant digits (the cosine moves in the 7th digit at most)."""
        dots, grams = [], []
        for shifts, unit in per_layer:
            flat = shifts.double().reshape(-1, shifts.shape[-1])  # (A K, d)
            dots.append(tuple(tuple(_digits(v) for v in row) for row in (shifts.double() @ unit.double()).tolist()))
            grams.append(tuple(tuple(_digits(v) for v in row) for row in (flat @ flat.T).tolist()))
        return cls(tuple(dots), tuple(grams))

    @property
    def size(self) -> int:
        return len(self.dots[0][0])

    def value(self, weights: torch.Tensor | None = None) -> float:
        w = torch.ones(self.size, dtype=torch.long) if weights is None else weights
        return float(self.values(w.reshape(1, -1))[0])

    def values(self, weights: torch.Tensor) -> torch.Tensor:
        w = weights.double()  # (R, K)
        return torch.stack([_content_cosine(torch.tensor(d, dtype=torch.float64),
                                            torch.tensor(g, dtype=torch.float64), w)
                            for d, g in zip(self.dots, self.gram, strict=True)]).mean(dim=0)


def _digits(value: float) -> float:
    return float(f"{value:.7g}")


def _content_cosine(dots: torch.Tensor, gram: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """dots (A, K), gram (A K, A K), w (R, K) -> (R,) content cosines (`FormEvidence`)."""
    n, k = dots.shape
    if n < 2:
        return torch.full((w.shape[0],), math.nan, dtype=torch.float64)
    inner = torch.einsum("rj,ajbk,rk->rab", w, gram.reshape(n, k, n, k), w)  # <m_a, m_b> (R, A, A)
    norms = inner.diagonal(dim1=1, dim2=2).clamp_min(0.0).sqrt()  # |m_a| (R, A)
    ok = (norms > 1e-12).all(dim=1)
    norms = norms.clamp_min(1e-12)
    cos = inner / (norms.unsqueeze(2) * norms.unsqueeze(1))  # <e_a, e_b>
    to_target = (w @ dots.T) / norms  # <e_a, u> (R, A)
    e0_s = cos[:, 0, 1:].mean(dim=1)
    s_s = cos[:, 1:, 1:].mean(dim=(1, 2))
    s_u = to_target[:, 1:].mean(dim=1)
    along = to_target[:, 0] - e0_s - s_u + s_s  # <e_0 - s, u - s>
    first = (1.0 - 2.0 * e0_s + s_s).clamp_min(0.0)  # |e_0 - s|^2
    second = (1.0 - 2.0 * s_u + s_s).clamp_min(0.0)  # |u - s|^2
    denom = (first * second).sqrt()
    valid = ok & (denom > 1e-12)
    return torch.where(valid, along / denom.clamp_min(1e-12), torch.full_like(along, math.nan))


AnyEvidence = ContextEvidence | LayersEvidence | RatioEvidence


def resampled_values(groups: Sequence[Sequence[Evidence]], *, n_resamples: int = 200,
                     seed: int = 0) -> list[list[list[float]]]:
    """Every evidence's value on each of `n_resamples` joint resamples of the test contexts, [resample][group]
    [member]: one draw of context multiplicities per resample, shared by every group, so whatever is recomputed
    from them (the verdict) is recomputed on paired data. No evidence at all: no resamples ([])."""
    items = [e for group in groups for e in group]
    if not items:
        return []
    k = items[0].size
    if any(e.size != k for e in items):
        raise ValueError("evidence: every item must come from the same test contexts")
    weights = torch.stack(list(resample_weights(k, n_resamples, seed)))  # (R, K)
    table = [[e.values(weights).tolist() for e in group] for group in groups]  # every value of every resample at once
    return [[[column[r] for column in group] for group in table] for r in range(n_resamples)]


def paired_spread(first: Evidence, second: Evidence, *, n_resamples: int = 200, level: float = 0.95,
                  seed: int = 0) -> float:
    """One-sided spread of first - second under joint resampling of their contexts: the distance from the point
    difference down to the (1 - level) quantile of the resampled differences (0 when they never differ)."""
    point = first.value() - second.value()
    weights = torch.stack(list(resample_weights(first.size, n_resamples, seed)))
    diffs = first.values(weights) - second.values(weights)
    finite = diffs[torch.isfinite(diffs)]
    if finite.numel() == 0 or not math.isfinite(point):
        return math.nan
    return max(point - float(finite.quantile(1.0 - level)), 0.0)
