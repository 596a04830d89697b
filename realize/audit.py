"""The audit: a calibrated realizability verdict per vector, with the evidence.

For each layer in play: split the shipped contexts into optimization and held-out sets, estimate the generic
prompt-presence direction g on each, then audit three kinds of target with the same search budget:

- `null`: random directions with the norm of the audited vectors' targets (what search reaches on nothing);
- `positive`: mean shifts of natural prompts from the corpus (what search reaches on realizable targets; the
  prompt itself is excluded from retrieval);
- `vector`: each vector's target a*v.

This module defines the items (`AuditConfig`, `Target`, `vector_targets`, `control_targets`) and audits one
(`audit_target`). Planning, sharding across processes, resume and verdicts (each target's best held-out specific
cosine among natural-enough prompts placed between the null and positive values, `realize.verdict`) live in
`realize.audit_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from realize.data.chat import Placement, encode
from realize.data.shift import mean_shift, prompt_shifts
from realize.data.vectors import SteeringVector, single_layer
from realize.audit_search import BUDGETS, AuditSetting, judge, per_context_shifts, pick_best, search
from realize.audit_store import item_id
from realize.audit_types import Generation, VectorAudit
from realize.verdict import VerdictThresholds, bootstrap_specific_cos
from realize.scorers.behavior import BehaviorConfig, behavior_recovery
from realize.scorers.manifold import manifold_share

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    budget: str = "default"  # search effort: quick | default | thorough (see realize.audit_search.BUDGETS)
    placement: Placement = "prefix"  # where prompts go in the user turn
    n_opt_contexts: int = 8  # optimization contexts
    n_heldout: int = 8  # held-out contexts (all verdict numbers come from these)
    n_null: int = 3  # random-direction controls per (layer, norm)
    n_positive: int = 3  # natural-prompt controls per layer
    behavior_tokens: int = 24  # tokens generated per context for behavior recovery (0 = skip)
    behavior_contexts: int = 3  # held-out contexts used for behavior recovery
    manifold: bool = True  # compute the on-manifold share
    thresholds: VerdictThresholds = field(default_factory=VerdictThresholds)  # verdict thresholds
    seed: int = 0  # seeds context split, control choice and every search
    show_progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {', '.join(BUDGETS)}, got {self.budget!r}")
        for name in ("n_opt_contexts", "n_heldout", "n_null", "n_positive", "behavior_contexts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.behavior_tokens < 0:
            raise ValueError(f"behavior_tokens: expected >= 0, got {self.behavior_tokens}")

    def key(self) -> dict[str, object]:
        """What makes results comparable (progress display excluded)."""
        out = dataclasses.asdict(self)
        out.pop("show_progress")
        return out


@dataclass(frozen=True)
class Target:
    """One thing to audit: a vector's single layer, or a control."""

    vector_id: str
    name: str
    source: str
    kind: str  # "vector" | "null" | "positive"
    layer: int
    scale: float
    method: str
    direction: torch.Tensor  # v (d,); the target is scale * direction
    exclude: tuple[str, ...] = ()  # prompts retrieval must not return (a positive control's own prompt)


def vector_targets(vectors: Sequence[SteeringVector], lm_name: str, config: AuditConfig, *,
                   fingerprint: str = "") -> list[Target]:
    """One target per vector (its single layer); ids hash direction, layer, scale, model and config."""
    targets = []
    for vector in vectors:
        layer, direction = single_layer(vector)
        scale = float(vector.scale if vector.scale is not None else 1.0)
        key = {"model": lm_name, "fingerprint": fingerprint, **config.key()}
        targets.append(Target(item_id("vector", direction, layer, scale, key), vector.name or "vector",
                              vector.source or "", "vector", layer, scale, vector.method or "unknown", direction))
    return targets


def control_targets(setting: AuditSetting, norm: float, config: AuditConfig, *, positive: bool = True,
                    fingerprint: str = "") -> list[Target]:
    """Null (random directions of `norm`) and, if `positive`, natural-prompt mean-shift controls at one layer."""
    lm, layer = setting.lm, setting.layer
    key = {"model": lm.name, "fingerprint": fingerprint, **config.key()}
    generator = torch.Generator().manual_seed(config.seed + 7919 * layer)
    targets = []
    for j in range(config.n_null):
        r = torch.randn(lm.hidden_size, generator=generator)
        direction = r / r.norm() * norm
        targets.append(Target(item_id("null", direction, layer, 1.0, key), f"null.L{layer}.norm{norm:.3g}.{j}", "random direction",
                              "null", layer, 1.0, "random", direction))
    if not positive:
        return targets
    pool = list(setting.natural_prompts)
    order = torch.randperm(len(pool), generator=generator)[: config.n_positive].tolist()
    chosen = [pool[i] for i in order]
    opt_ids = [encode(lm.tokenizer, c) for c in setting.opt_contexts]
    shifts = prompt_shifts(lm.model, setting.layout, [encode(lm.tokenizer, p) for p in chosen], opt_ids, layer,
                           pad_id=int(lm.tokenizer.pad_token_id or 0))
    for j, (prompt, deltas) in enumerate(zip(chosen, shifts, strict=True)):
        direction = mean_shift(deltas)
        targets.append(Target(item_id("positive", direction, layer, 1.0, key), f"positive.L{layer}.{j}",
                              f"natural prompt: {prompt}", "positive", layer, 1.0, "natural-prompt shift",
                              direction, exclude=(prompt,)))
    return targets


def audit_target(setting: AuditSetting, target: Target, config: AuditConfig) -> VectorAudit:
    """Search, judge on held-out contexts, and (for vectors) measure behavior and the on-manifold share."""
    start = time.perf_counter()
    budget = BUDGETS[config.budget]
    goal = target.scale * target.direction
    candidates = search(setting, goal, budget, seed=config.seed, exclude=target.exclude)
    scores = judge(setting, goal, candidates)
    best = pick_best(scores, config.thresholds.min_realism)
    retrieved = [s for s in scores if s.attack == "retrieval"]
    best_unrelated = max(retrieved, key=lambda s: s.specific_cos) if retrieved else None
    specific_interval = None
    if best is not None:
        per_context = per_context_shifts(setting, best.ids)
        specific_interval = bootstrap_specific_cos(per_context, goal, setting.generic_heldout, seed=config.seed)
    behavior, behavior_interval, generations = None, None, ()
    if target.kind == "vector" and best is not None and config.behavior_tokens > 0:
        result = behavior_recovery(
            setting.lm, {target.layer: target.direction}, target.scale, best.prompt,
            setting.heldout_contexts[: config.behavior_contexts], setting.placement,
            BehaviorConfig(max_new_tokens=config.behavior_tokens, seed=config.seed),
        )
        behavior, behavior_interval = result.recovery, result.interval
        generations = tuple(Generation(c.context, c.steered, c.prompted, c.base) for c in result.per_context)
    manifold: dict[str, float] = {}
    if target.kind == "vector" and config.manifold:
        share = manifold_share(setting.lm, target.direction, target.layer)
        manifold = {"share90": share.share90, "share99": share.share99,
                    "random_share90": share.random_share90, "random_share99": share.random_share99}
    return VectorAudit(
        vector_id=target.vector_id, name=target.name, source=target.source, kind=target.kind, layer=target.layer,
        scale=target.scale, method=target.method, target_norm=float(goal.norm()), frontier=tuple(scores), best=best, calibration=None,
        interval=None, specific_interval=specific_interval, verdict=None, best_unrelated=best_unrelated,
        behavior_recovery=behavior, behavior_interval=behavior_interval, generations=generations,
        manifold=manifold, seconds=time.perf_counter() - start,
    )
