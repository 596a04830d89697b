"""What every attack shares: the objective protocol and the result with its full trajectory.

An objective scores candidate prompts (token ids that go into the prompt slot of a chat turn, see `data.chat`);
lower loss is better. Attacks are objective-agnostic: GCG needs `loss_and_grad`, gradient-free searches need only
`losses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Objective(Protocol):
    """A batched loss over candidate prompts of equal length (lower is better)."""

    def losses(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts (B, L) long -> losses (B,) float, no gradient."""
        ...

    def loss_and_grad(self, prompt: torch.Tensor) -> tuple[float, torch.Tensor]:
        """prompt (L,) long -> (loss, gradient of the loss w.r.t. the one-hot prompt, (L, V))."""
        ...

    def metrics(self, prompt: torch.Tensor) -> Mapping[str, float]:
        """prompt (L,) long -> named diagnostics for reports (e.g. cos, specific_cos, norm_ratio)."""
        ...


@dataclass(frozen=True)
class Step:
    """One optimizer step: what was evaluated and the best so far."""

    step: int
    loss: float  # best loss among this step's candidates
    best_loss: float  # best loss so far
    prompt_ids: tuple[int, ...]  # current prompt after the step
    prompt: str  # its text
    seconds: float  # wall time of the step
    n_candidates: int  # candidates evaluated in the step
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack run."""

    attack: str  # "gcg", "beam", "fluent", "relaxed", "random", "retrieval"
    best_ids: tuple[int, ...]
    best_prompt: str
    best_loss: float
    trajectory: tuple[Step, ...]
    seconds: float
    n_evaluations: int  # candidate prompts whose loss was computed
    config: Mapping[str, object] = field(default_factory=dict)
    frontier: tuple[Mapping[str, object], ...] = ()  # Pareto points (fluent search): prompt, ids, loss, cos, ppl...
