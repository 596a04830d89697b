"""The activation-shift loss and its weights (shared/README "Activation shift", "Specificity").

With M the mean over contexts of the per-context mean shift (B, d), t = a*v the target (d,) and P the projection
orthogonal to the generic "a prompt is present" direction g:

    1 - cos(M, t) + beta * (|M|/|t| - 1)^2 + gamma * (1 - cos(P M, P t)) + consistency * (1 - mean_kj cos(d_kj, t))

The specific cosine floors both projected norms at 1e-3 of the unprojected ones, as `data.shift.specific_cosine`.
`attacks.objectives.ActivationShiftObjective` computes M on its contexts and sums this loss over layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from realize.data.shift import project_out


@dataclass(frozen=True, kw_only=True)
class ActivationObjectiveConfig:
    beta: float = 0.1  # weight of the norm term (|M|/|t| - 1)^2
    gamma: float = 1.0  # weight of the specific-cosine term 1 - cos(PM, Pt); ignored without g
    consistency: float = 0.0  # weight of the per-position term 1 - mean cos(d_kj, t)
    batch_size: int = 64  # candidates per forward (each x K contexts); halved on out-of-memory
    kv_reuse: bool = True  # False: every placed input runs from scratch (reference path, for tests/benchmarks)

    def __post_init__(self) -> None:
        for name in ("beta", "gamma", "consistency"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {self.batch_size!r}")


def activation_loss(
    mean: torch.Tensor,
    per_position_cos: torch.Tensor,
    target: torch.Tensor,
    generic: torch.Tensor | None,
    config: ActivationObjectiveConfig,
) -> torch.Tensor:
    """mean shift M (B, d), mean per-position cosine (B,), target t (d,), g (d,) | None -> loss (B,)."""
    t = target.to(mean)
    loss = 1 - F.cosine_similarity(mean, t.unsqueeze(0), dim=-1)
    loss = loss + config.beta * (mean.norm(dim=-1) / t.norm().clamp_min(1e-12) - 1) ** 2
    if generic is not None and config.gamma > 0:
        a, b = project_out(mean, generic.to(mean)), project_out(t, generic.to(mean))
        na = torch.maximum(a.norm(dim=-1), 1e-3 * mean.norm(dim=-1)).clamp_min(1e-12)
        nb = torch.maximum(b.norm(), 1e-3 * t.norm()).clamp_min(1e-12)
        loss = loss + config.gamma * (1 - (a @ b) / (na * nb))
    if config.consistency > 0:
        loss = loss + config.consistency * (1 - per_position_cos)
    return loss
