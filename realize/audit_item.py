"""Audit one work item: search, choose on selection contexts, measure on test contexts, then (vectors) behavior and
the on-manifold share. The result is evidence only (`VectorAudit`); `realize.judging` turns it into a verdict."""

from __future__ import annotations

import logging
import time

from realize.audit_search import AuditSetting, judge, pick, search
from realize.audit_types import Behavior, Generation, PromptScore, VectorAudit
from realize.config import AuditConfig
from realize.scorers.behavior import BehaviorConfig, BehaviorResult, behavior_recovery
from realize.scorers.manifold import manifold_share
from realize.targets import Target
from realize.verdict import ContextEvidence, magnitude

logger = logging.getLogger(__name__)


def _behavior(setting: AuditSetting, target: Target, prompt: str, config: AuditConfig) -> BehaviorResult:
    return behavior_recovery(
        setting.lm, {target.layer: target.direction}, target.scale, prompt,
        list(setting.contexts.test[: config.behavior_contexts]), setting.placement,
        BehaviorConfig(max_new_tokens=config.behavior_tokens, seed=config.seed),
    )


def _summary(result: BehaviorResult) -> Behavior:
    n = sum(c.n_positions for c in result.per_context)
    effect = sum(c.kl_steered_base * c.n_positions for c in result.per_context) / max(n, 1)
    return Behavior(result.prompt, result.recovery, result.interval, effect, result.inert)


def audit_target(setting: AuditSetting, target: Target, config: AuditConfig) -> VectorAudit:
    """The evidence for one target (see module docstring)."""
    start = time.perf_counter()
    goal = target.goal
    candidates = search(setting, goal, config.search, seed=config.seed, exclude_clusters=target.exclude_clusters)
    scores, per_context = judge(setting, goal, candidates)
    floor = setting.min_realism

    def chosen(index: int | None) -> PromptScore | None:
        return None if index is None else scores[index]

    best_index = pick(scores, floor)
    best = chosen(best_index)
    best_unrelated = chosen(pick(scores, floor, attacks=("retrieval",)))
    best_no_retrieval = None
    if target.kind == "positive":  # what the search does without the corpus (reported, never calibrating)
        alone, _ = judge(setting, goal, search(setting, goal, config.search, seed=config.seed, retrieval=False))
        index = pick(alone, floor)
        best_no_retrieval = None if index is None else alone[index]
    evidence = None
    if best_index is not None:
        evidence = ContextEvidence.from_shifts(per_context[best_index], goal, setting.generic_test)
    mag = magnitude(float(goal.norm()), target.scale, setting.corpus.natural_norms(),
                    None if best is None else best.fve)
    behavior = behavior_unrelated = None
    generations: tuple[Generation, ...] = ()
    if target.kind == "vector" and config.behavior_tokens > 0:
        if best is not None:
            result = _behavior(setting, target, best.prompt, config)
            behavior = _summary(result)
            generations = tuple(Generation(c.context, c.steered, c.prompted, c.base) for c in result.per_context)
        if best_unrelated is not None:
            behavior_unrelated = _summary(_behavior(setting, target, best_unrelated.prompt, config))
    manifold: dict[str, float] = {}
    if target.kind == "vector" and config.manifold:
        share = manifold_share(setting.lm, target.direction, target.layer)
        manifold = {"share90": share.share90, "share99": share.share99,
                    "random_share90": share.random_share90, "random_share99": share.random_share99}
    return VectorAudit(
        vector_id=target.vector_id, name=target.name, source=target.source, kind=target.kind, layer=target.layer,
        scale=target.scale, method=target.method, target_norm=float(goal.norm()), frontier=tuple(scores), best=best,
        best_unrelated=best_unrelated, best_no_retrieval=best_no_retrieval, evidence=evidence, magnitude=mag,
        min_realism=floor, behavior=behavior, behavior_unrelated=behavior_unrelated, generations=generations,
        manifold=manifold, seconds=time.perf_counter() - start,
    )
