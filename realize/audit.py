"""The audit: a calibrated realizability verdict per vector, with the evidence.

For each layer in play: split the shipped contexts into optimization and held-out sets, estimate the generic
prompt-presence direction g on each, then audit three kinds of target with the same search budget:

- `null`: random directions with the norm of the audited vectors' targets (what search reaches on nothing);
- `positive`: mean shifts of natural prompts from the corpus (what search reaches on realizable targets; the
  prompt itself is excluded from retrieval);
- `vector`: each vector's target a*v.

Every target's best held-out specific cosine among natural-enough prompts is placed between the null and positive
values (`realize.verdict`), controls leave-one-out. Finished items are stored one file each (`realize.audit_store`),
so a run resumes where it stopped and a batch pays for its controls once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from data.chat import Placement, encode
from data.corpora import load_corpus, split_contexts
from data.models import LoadedModel
from data.shift import mean_shift, prompt_shifts
from data.vectors import SteeringVector, single_layer
from realize.audit_search import BUDGETS, AuditSetting, judge, make_setting, per_context_shifts, pick_best, search
from realize.audit_store import ItemStore, item_id
from realize.audit_types import Generation, VectorAudit
from realize.verdict import VerdictThresholds, bootstrap_specific_cos, calibrate, decide
from scorers.behavior import BehaviorConfig, behavior_recovery
from scorers.manifold import manifold_share
from scorers.realism import RealismClassifier, load_classifier

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


def vector_targets(vectors: Sequence[SteeringVector], lm_name: str, config: AuditConfig) -> list[Target]:
    targets = []
    for vector in vectors:
        layer, direction = single_layer(vector)
        scale = float(vector.scale if vector.scale is not None else 1.0)
        key = {"model": lm_name, **config.key()}
        targets.append(Target(item_id("vector", direction, layer, scale, key), vector.name or "vector",
                              vector.source or "", "vector", layer, scale, vector.method or "unknown", direction))
    return targets


def control_targets(setting: AuditSetting, norm: float, config: AuditConfig, *, positive: bool = True) -> list[Target]:
    """Null (random directions of `norm`) and, if `positive`, natural-prompt mean-shift controls at one layer."""
    lm, layer = setting.lm, setting.layer
    key = {"model": lm.name, **config.key()}
    generator = torch.Generator().manual_seed(config.seed + 7919 * layer)
    targets = []
    for j in range(config.n_null):
        r = torch.randn(lm.hidden_size, generator=generator)
        direction = r / r.norm() * norm
        targets.append(Target(item_id("null", direction, layer, 1.0, key), f"null.L{layer}.{j}", "random direction",
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


def best_value(audit: VectorAudit) -> float:
    """The number the verdict rests on: best held-out specific cos among natural-enough prompts (0 if none)."""
    return audit.best.specific_cos if audit.best is not None else 0.0


def with_verdict(audit: VectorAudit, null: Sequence[float], positive: Sequence[float],
                 thresholds: VerdictThresholds) -> VectorAudit:
    """Attach calibration, score interval and verdict (controls are judged leave-one-out by the caller)."""
    cal = calibrate(best_value(audit), null, positive)
    interval = None
    if audit.specific_interval is not None:
        lo, hi = audit.specific_interval
        interval = (calibrate(lo, null, positive).score, calibrate(hi, null, positive).score)
    return dataclasses.replace(audit, calibration=cal, interval=interval, verdict=decide(cal, thresholds))


def _values(audits: Sequence[VectorAudit], kind: str, *, norm: float | None = None,
            exclude: str | None = None) -> list[float]:
    """Best values of `kind` controls (nulls: of the given target norm), without `exclude` unless it is the only one."""
    pool = [a for a in audits if a.kind == kind and (norm is None or math.isclose(a.target_norm, norm, rel_tol=1e-3))]
    rest = [best_value(a) for a in pool if a.vector_id != exclude]
    return rest or [best_value(a) for a in pool]


def _get(store: ItemStore, setting: AuditSetting, target: Target, config: AuditConfig) -> VectorAudit:
    """The stored item, or compute and store it."""
    found = store.load(target.vector_id)
    if found is not None:
        logger.info("%s: already audited (%s), skipped", target.name, store.path(target.vector_id))
        return found
    audit = audit_target(setting, target, config)
    store.save(audit)
    return audit


def run_audit(
    lm: LoadedModel,
    vectors: Sequence[SteeringVector],
    config: AuditConfig,
    store: ItemStore,
    on_done: Callable[[VectorAudit], None] | None = None,
    classifier: RealismClassifier | None = None,
) -> list[VectorAudit]:
    """Audit every vector and the controls it needs; returns controls then vectors, all with verdicts.
    `on_done` is called with each vector's judged audit as soon as it is finished; `classifier` defaults to the
    shipped realism classifier."""
    contexts = load_corpus("contexts")
    if config.n_opt_contexts + config.n_heldout > len(contexts):
        raise ValueError(f"n_opt_contexts + n_heldout: at most {len(contexts)} contexts are shipped")
    opt, heldout = split_contexts(contexts, config.n_heldout, seed=config.seed)
    opt = opt[: config.n_opt_contexts]
    classifier = classifier or load_classifier()
    natural = load_corpus("natural_prompts")
    targets = vector_targets(vectors, lm.name, config)
    results: list[VectorAudit] = []
    outer = tqdm(total=len(targets), desc="vectors", disable=not config.show_progress)
    for layer in sorted({t.layer for t in targets}):
        setting = make_setting(lm, layer, config.placement, opt, heldout, natural, classifier)
        layer_targets = [t for t in targets if t.layer == layer]
        norms = sorted({float((t.scale * t.direction).norm()) for t in layer_targets})
        controls = [c for c in control_targets(setting, norms[0], config) if c.kind == "positive"]
        for norm in norms:
            controls += control_targets(setting, norm, config, positive=False)
        bar = tqdm(controls, desc=f"controls L{layer}", leave=False, disable=not config.show_progress)
        done = [_get(store, setting, c, config) for c in bar]
        positive = _values(done, "positive")
        for audit in done:
            null = _values(done, "null", norm=audit.target_norm if audit.kind == "null" else norms[0],
                           exclude=audit.vector_id)
            pos = _values(done, "positive", exclude=audit.vector_id)
            results.append(with_verdict(audit, null, pos, config.thresholds))
        for target in layer_targets:
            audit = _get(store, setting, target, config)
            null = _values(done, "null", norm=audit.target_norm)
            judged = with_verdict(audit, null, positive, config.thresholds)
            results.append(judged)
            outer.update(1)
            if on_done is not None:
                on_done(judged)
    outer.close()
    return results
