"""Audit one work item on each of its axes. The result is evidence only (`VectorAudit`); `realize.judging` turns it
into verdicts.

- Activation axis: search on optimization contexts, choose on selection contexts, measure on test contexts.
- Behavior axis: the steered model's continuations on the behavior subsets of the same three sets (computed once per
  item), a behavior search, the same choose-then-measure split; behavior positives first distill their vector.
- Vectors also get the on-manifold share and, on the behavior axis, the activation prompt's behavior, the best of a
  panel of unrelated instructions (the generic baseline) and the generations side by side.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from realize.audit_search import AuditSetting, judge, pick, search
from realize.audit_types import BehaviorAxis, BehaviorScore, Generation, PromptScore, VectorAudit
from realize.behavior_search import judge_behavior, pick_behavior, search_behavior, unrelated_panel
from realize.config import AuditConfig
from realize.data.chat import encode
from realize.data.steered import greedy_batch, steered_contexts
from realize.distill import DistillConfig, train_distilled
from realize.scorers.behavior import BehaviorConfig, measure_prompts
from realize.scorers.manifold import manifold_share
from realize.targets import Target
from realize.verdict import ContextEvidence, LayersEvidence, MeanEvidence, magnitude_at

logger = logging.getLogger(__name__)


def _evidence(per_context: dict[int, torch.Tensor], goal: dict[int, torch.Tensor],
              setting: AuditSetting) -> ContextEvidence | LayersEvidence:
    parts = tuple(ContextEvidence.from_shifts(per_context[i], goal[i], setting.generic_test[i]) for i in sorted(goal))
    return parts[0] if len(parts) == 1 else LayersEvidence(parts)


def _activation(setting: AuditSetting, target: Target, goal: dict[int, torch.Tensor],
                config: AuditConfig) -> dict[str, object]:
    candidates = search(setting, goal, config.search, seed=config.seed, exclude_clusters=target.exclude_clusters)
    scores, per_context = judge(setting, goal, candidates)
    floor = setting.min_realism

    def chosen(index: int | None) -> PromptScore | None:
        return None if index is None else scores[index]

    best_index = pick(scores, floor)
    best_no_retrieval = None
    if target.kind == "positive":  # what the search does without the corpus (reported, never calibrating)
        alone, _ = judge(setting, goal, search(setting, goal, config.search, seed=config.seed, retrieval=False))
        index = pick(alone, floor)
        best_no_retrieval = None if index is None else alone[index]
    return {
        "frontier": tuple(scores), "best": chosen(best_index),
        "best_unrelated": chosen(pick(scores, floor, attacks=("retrieval",))), "best_no_retrieval": best_no_retrieval,
        "evidence": None if best_index is None else _evidence(per_context[best_index], goal, setting),
    }


def _behavior(setting: AuditSetting, target: Target, directions: dict[int, torch.Tensor], scale: float,
              config: AuditConfig, activation_best: PromptScore | None,
              distill_losses: tuple[float, float] | None) -> BehaviorAxis:
    split = setting.behavior_contexts
    assert split is not None and setting.effects is not None, "the setting was built without the behavior axis"
    lm, tokens = setting.lm, config.behavior_tokens

    def run(contexts: tuple[str, ...]):  # noqa: ANN202
        return steered_contexts(lm, setting.layout, directions, scale, contexts, tokens)

    opt, selection, test = run(split.optimization), run(split.selection), run(split.test)
    n = sum(len(c.continuation) for c in test)
    effect = sum(float(c.effect.sum()) for c in test) / max(n, 1)
    candidates = search_behavior(setting, setting.effects, opt, config.search, seed=config.seed,
                                 exclude_clusters=target.exclude_clusters)
    scores = judge_behavior(setting, selection, test, candidates)
    floor = setting.min_realism
    index = pick_behavior(scores, floor)
    best = None if index is None else scores[index]
    unrelated = pick_behavior(scores, floor, attacks=("retrieval",))
    activation_prompt = None
    if activation_best is not None and target.kind == "vector":
        (measure,) = measure_prompts(lm, setting.layout, test, [list(activation_best.ids)])
        activation_prompt = BehaviorScore(
            prompt=activation_best.prompt, ids=activation_best.ids, attack="activation best",
            selection_recovery=float("nan"), recovery=measure.recovery, per_context=measure.per_context,
            kl=measure.kl, prompt_effect=measure.prompt_effect, direction_cos=measure.direction_cos,
            effect_ratio=measure.effect_ratio, perplexity=activation_best.perplexity,
            worst_window_perplexity=activation_best.worst_window_perplexity, realism=activation_best.realism)
    generic = None
    if target.kind == "vector":  # the baseline of the specific recovery: unrelated instructions
        panel = unrelated_panel(setting.effects, opt, config.search, seed=config.seed)
        judged = judge_behavior(setting, selection, test, [(tuple(encode(lm.tokenizer, p)), "unrelated panel")
                                                           for p in panel])
        judged = [g for g in judged if math.isfinite(g.selection_recovery)]
        generic = max(judged, key=lambda g: g.selection_recovery) if judged else None
    generations: tuple[Generation, ...] = ()
    if target.kind == "vector" and best is not None:
        prompted = [setting.layout.place(list(best.ids), c.context_ids).ids for c in test]
        own = greedy_batch(lm, prompted + [c.base_ids for c in test], tokens)
        decode = lm.tokenizer.decode
        generations = tuple(
            Generation(c.context, decode(list(c.continuation), skip_special_tokens=True).strip(),
                       decode(own[i], skip_special_tokens=True).strip(),
                       decode(own[len(test) + i], skip_special_tokens=True).strip())
            for i, c in enumerate(test))
    return BehaviorAxis(
        effect=effect, inert=effect < BehaviorConfig().min_effect_kl, frontier=tuple(scores), best=best,
        best_unrelated=None if unrelated is None else scores[unrelated], activation_prompt=activation_prompt,
        evidence=None if best is None else MeanEvidence(best.per_context), generations=generations,
        vector_norm=float(scale * torch.linalg.vector_norm(torch.cat(list(directions.values())))),
        distill_losses=distill_losses, generic=generic,
    )


def audit_target(setting: AuditSetting, target: Target, config: AuditConfig) -> VectorAudit:
    """The evidence for one target (see module docstring)."""
    start = time.perf_counter()
    directions, distill_losses = dict(target.directions), None
    if target.kind == "behavior-positive":
        distilled = train_distilled(setting.lm, setting.layout, target.prompt, target.layers,
                                    setting.contexts.optimization,
                                    DistillConfig(steps=config.distill_steps, tokens=config.behavior_tokens))
        directions = dict(distilled.vector.directions)
        distill_losses = (distilled.losses[0], distilled.losses[-1])
    goal = {i: target.scale * v.float() for i, v in sorted(directions.items())}
    activation: dict[str, object] = {"frontier": (), "best": None, "best_unrelated": None,
                                     "best_no_retrieval": None, "evidence": None}
    if "activation" in target.axes:
        activation = _activation(setting, target, goal, config)
    best = activation["best"]
    behavior = None
    if "behavior" in target.axes:
        behavior = _behavior(setting, target, directions, target.scale, config,
                             best if isinstance(best, PromptScore) else None, distill_losses)
    mag = magnitude_at({i: float(t.norm()) for i, t in goal.items()}, target.scale,
                       {i: setting.corpora[i].natural_norms() for i in goal},
                       best.fve if isinstance(best, PromptScore) else None)
    manifold: dict[str, float] = {}
    if target.kind == "vector" and config.manifold:
        for i, v in directions.items():
            share = manifold_share(setting.lm, v, i)
            suffix = "" if len(directions) == 1 else f"@L{i}"
            manifold |= {f"share90{suffix}": share.share90, f"share99{suffix}": share.share99,
                         f"random_share90{suffix}": share.random_share90,
                         f"random_share99{suffix}": share.random_share99}
    return VectorAudit(
        vector_id=target.vector_id, name=target.name, source=target.source, kind=target.kind, axes=target.axes,
        layer=target.layer, layers=tuple(sorted(goal)), scale=target.scale, method=target.method,
        target_norm=float(torch.linalg.vector_norm(torch.cat([goal[i] for i in sorted(goal)]))),
        magnitude=mag, min_realism=setting.min_realism, behavior=behavior, manifold=manifold,
        seconds=time.perf_counter() - start, **activation,  # type: ignore[arg-type]
    )
