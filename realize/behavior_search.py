"""The behavior axis of one target: search for a natural prompt that makes the model do what the vector does.

Contexts are the audit's three sets (`AuditSetting.contexts`), `behavior_contexts` of the optimization and selection
sets and `behavior_test_contexts` of the test set; on each, the steered model's continuation is computed once
(`realize.data.steered`). Then:

1. retrieval by behavior: every natural prompt's effect on the next-token distribution at the first answer position
   (probability change, averaged over the behavior optimization contexts) is cached once per (model, placement,
   contexts) (`prompt_effects`); the vector's own effect there ranks them by cosine (one matrix product), and the
   best `behavior_probe` are scored with the real objective (KL along the steered continuations);
2. natural GCG (`realize.attacks.natural`: whole-word moves under a fluency budget) on the behavior objective,
   started from the best of them;
3. judging: every candidate's recovery on selection contexts (it chooses) and on test contexts (it is reported),
   with effect sizes and the direction of the effect (`realize.scorers.behavior.measure_prompts`);
4. vectors: the same for a panel of unrelated instructions (`unrelated_panel`), the baseline of the specific
   recovery (`realize.verdict`: "generically realizable").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from realize.attacks.baselines import RetrievalConfig, natural_retrieval
from realize.attacks.behavior_objective import BehaviorObjective
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.audit_search import AuditSetting, Candidate, unique
from realize.audit_types import BehaviorScore
from realize.config import SearchBudget
from realize.data.steered import SteeredContext
from realize.prompt_effects import PromptEffects
from realize.scorers.behavior import measure_prompts
from realize.scorers.perplexity import score_perplexity
from realize.scorers.realism import realism_scores

logger = logging.getLogger(__name__)
GENERIC_PANEL = 8  # unrelated instructions whose best recovery is the behavior axis's generic baseline


def rank_by_behavior(effects: PromptEffects, opt: Sequence[SteeredContext],
                     exclude_clusters: Sequence[str] = ()) -> list[int]:
    """Corpus indices (clusters in `exclude_clusters` left out), by the cosine of each prompt's first-answer effect
    with the vector's, best first."""
    vector_effect = torch.stack([c.steered[0].exp() - c.base[0].exp() for c in opt]).mean(0)
    allowed = [i for i, k in enumerate(effects.clusters) if k not in set(exclude_clusters)]
    if not allowed:
        return []
    matrix = effects.effects[allowed].float()
    cos = (matrix @ vector_effect) / (matrix.norm(dim=1) * vector_effect.norm()).clamp_min(1e-12)
    return [allowed[i] for i in cos.argsort(descending=True).tolist()]


def retrieve_by_behavior(setting: AuditSetting, effects: PromptEffects, opt: Sequence[SteeredContext],
                         objective: BehaviorObjective, budget: SearchBudget,
                         exclude_clusters: Sequence[str] = ()) -> list[Candidate]:
    """Rank the corpus by the cosine of its first-answer effect with the vector's, score the best
    `behavior_probe` with the objective, keep the best `keep_retrieval` (best first)."""
    ranking = rank_by_behavior(effects, opt, exclude_clusters)
    if not ranking:
        return []
    probe = [effects.prompts[i] for i in ranking[: budget.behavior_probe]]
    result = natural_retrieval(objective, setting.lm, setting.layout,
                               RetrievalConfig(prompts=tuple(probe), keep=budget.keep_retrieval))
    return [(point.ids, "retrieval") for point in result.frontier]


def unrelated_panel(effects: PromptEffects, opt: Sequence[SteeredContext], budget: SearchBudget, *, seed: int,
                    size: int = GENERIC_PANEL) -> list[str]:
    """`size` corpus instructions unrelated to the vector, one per cluster, drawn with `seed`: none from a cluster
    of the `behavior_probe` prompts closest to the vector's first-answer effect (those retrieval tries), so the
    panel measures what an instruction that has nothing to do with the vector recovers."""
    ranking = rank_by_behavior(effects, opt)
    related = {effects.clusters[i] for i in ranking[: budget.behavior_probe]}
    first: dict[str, int] = {}
    for i in sorted(ranking):
        if effects.clusters[i] not in related:
            first.setdefault(effects.clusters[i], i)
    pool = sorted(first.values())
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(pool), generator=gen)[:size].tolist()
    return [effects.prompts[pool[j]] for j in sorted(chosen)]


def search_behavior(setting: AuditSetting, effects: PromptEffects, opt: Sequence[SteeredContext],
                    budget: SearchBudget, *, seed: int, exclude_clusters: Sequence[str] = ()) -> list[Candidate]:
    """Candidates for the behavior axis: retrieved by behavior, then natural GCG on the behavior objective."""
    lm = setting.lm
    objective = BehaviorObjective(lm.model, lm.tokenizer, setting.layout, opt)
    candidates = retrieve_by_behavior(setting, effects, opt, objective, budget, exclude_clusters)
    if candidates:
        config = NaturalConfig(steps=budget.behavior_steps, width=budget.behavior_width,
                               max_frontier=budget.max_frontier, seed=seed)
        result = natural_run(objective, lm, setting.layout, config, init=candidates[0][0])
        candidates += [(point.ids, "natural") for point in result.frontier]
    return unique(candidates)


def judge_behavior(setting: AuditSetting, selection: Sequence[SteeredContext], test: Sequence[SteeredContext],
                   candidates: Sequence[Candidate]) -> list[BehaviorScore]:
    """Selection recovery (chooses) and test recovery, effects and direction (reported), plus naturalness."""
    if not candidates:
        return []
    lm = setting.lm
    ids = [list(c[0]) for c in candidates]
    chosen = measure_prompts(lm, setting.layout, selection, ids)
    reported = measure_prompts(lm, setting.layout, test, ids)
    texts = [lm.tokenizer.decode(i) for i in ids]
    ppl = score_perplexity(lm, texts)
    realism = realism_scores(lm, texts, setting.classifier)
    return [
        BehaviorScore(prompt=text, ids=tuple(i), attack=attack, selection_recovery=sel.recovery,
                      recovery=rep.recovery, per_context=rep.per_context, kl=rep.kl, prompt_effect=rep.prompt_effect,
                      direction_cos=rep.direction_cos, effect_ratio=rep.effect_ratio, perplexity=p.perplexity,
                      worst_window_perplexity=p.worst_window_perplexity, realism=float(r))
        for i, (_, attack), text, sel, rep, p, r in zip(ids, candidates, texts, chosen, reported, ppl, realism,
                                                        strict=True)
    ]


def pick_behavior(scores: Sequence[BehaviorScore], min_realism: float, *,
                  attacks: Sequence[str] | None = None) -> int | None:
    """Index of the highest selection recovery among prompts with realism >= `min_realism` (optionally found by
    one of `attacks`); None when none qualifies."""
    best, index = -math.inf, None
    for i, s in enumerate(scores):
        if s.realism < min_realism or not math.isfinite(s.selection_recovery):
            continue
        if attacks is not None and s.attack not in attacks:
            continue
        if s.selection_recovery > best:
            best, index = s.selection_recovery, i
    return index
