"""One audit target (a vector or a control): search for prompts, then judge every candidate on held-out contexts.

The search runs on optimization contexts only (fluent Pareto search + natural-prompt retrieval); every frontier
prompt is then re-measured on held-out contexts (raw and specific cosine, per-position cosine, norm ratio) and
scored for naturalness (perplexity, worst-window perplexity, realism classifier).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from realize.attacks.baselines import natural_retrieval
from realize.attacks.beam import BeamConfig
from realize.attacks.fluent import FluentConfig
from realize.attacks.fluent import run as fluent_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generic
from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.models import LoadedModel
from realize.data.shift import aligned_activations, prompt_shifts, shift_metrics
from realize.audit_types import PromptScore
from realize.scorers.perplexity import score_perplexity
from realize.scorers.realism import RealismClassifier, realism_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SearchBudget:
    """Search effort per target (see `BUDGETS`)."""

    fluent_steps: int  # fluent search swap steps
    fluent_width: int  # candidates per fluency weight per step
    lambdas: tuple[float, ...]  # fluency weights of the population
    beam_width: int  # beam initializer: prompts kept
    beam_samples: int  # beam initializer: samples per kept prompt
    beam_length: int  # beam initializer: max prompt tokens
    retrieval_prompts: int  # natural prompts scored by retrieval (0 = all)
    keep_retrieval: int  # retrieval prompts carried to held-out evaluation
    max_frontier: int  # fluent frontier points carried to held-out evaluation


BUDGETS: dict[str, SearchBudget] = {
    "quick": SearchBudget(fluent_steps=4, fluent_width=12, lambdas=(0.0, 0.1), beam_width=4, beam_samples=8,
                          beam_length=8, retrieval_prompts=120, keep_retrieval=4, max_frontier=8),
    # default: one vector plus its 6 controls in about 5 minutes on 2 CPU cores (a batch shares the controls)
    "default": SearchBudget(fluent_steps=6, fluent_width=12, lambdas=(0.0, 0.1), beam_width=5, beam_samples=8,
                            beam_length=10, retrieval_prompts=160, keep_retrieval=5, max_frontier=10),
    "thorough": SearchBudget(fluent_steps=40, fluent_width=24, lambdas=(0.0, 0.01, 0.03, 0.1, 0.3),
                             beam_width=8, beam_samples=16, beam_length=12, retrieval_prompts=0, keep_retrieval=10,
                             max_frontier=24),
}


@dataclass(frozen=True)
class AuditSetting:
    """What every target at one (model, layer, placement) shares: contexts, generic directions, prompt pools."""

    lm: LoadedModel
    layer: int
    placement: Placement
    layout: ChatLayout
    opt_contexts: tuple[str, ...]
    heldout_contexts: tuple[str, ...]
    generic_opt: torch.Tensor  # g on optimization contexts (d,)
    generic_heldout: torch.Tensor  # g on held-out contexts (d,)
    natural_prompts: tuple[str, ...]  # retrieval corpus
    classifier: RealismClassifier
    heldout_base: tuple[torch.Tensor, ...]  # prompt-free aligned activations on held-out contexts, (n_k, d) each


def make_setting(
    lm: LoadedModel,
    layer: int,
    placement: Placement,
    opt_contexts: Sequence[str],
    heldout_contexts: Sequence[str],
    natural_prompts: Sequence[str],
    classifier: RealismClassifier,
) -> AuditSetting:
    layout = chat_layout(lm.tokenizer, placement)
    heldout_ids = [encode(lm.tokenizer, c) for c in heldout_contexts]
    base = aligned_activations(lm.model, layout, None, heldout_ids, layer, pad_id=_pad(lm))
    return AuditSetting(
        lm=lm,
        layer=layer,
        placement=placement,
        layout=layout,
        opt_contexts=tuple(opt_contexts),
        heldout_contexts=tuple(heldout_contexts),
        generic_opt=estimate_generic(lm, layout, layer, opt_contexts),
        generic_heldout=estimate_generic(lm, layout, layer, heldout_contexts),
        natural_prompts=tuple(natural_prompts),
        classifier=classifier,
        heldout_base=tuple(base),
    )


def _pad(lm: LoadedModel) -> int:
    return int(lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0)


def search(
    setting: AuditSetting,
    target: torch.Tensor,
    budget: SearchBudget,
    *,
    seed: int,
    exclude: Sequence[str] = (),
) -> list[tuple[tuple[int, ...], str]]:
    """Candidate prompts (ids, attack) for `target` = a*v (d,): the fluent frontier and the best natural prompts."""
    lm = setting.lm
    objective = ActivationShiftObjective(
        lm.model, lm.tokenizer, setting.layout, target, setting.layer,
        [encode(lm.tokenizer, c) for c in setting.opt_contexts], generic=setting.generic_opt,
        config=ActivationObjectiveConfig(),
    )
    pool = [p for p in setting.natural_prompts if p not in set(exclude)]
    if budget.retrieval_prompts:
        rng = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(pool), generator=rng)[: budget.retrieval_prompts].tolist()
        pool = [pool[i] for i in sorted(pick)]
    retrieved = natural_retrieval(objective, pool, lm.tokenizer, keep=budget.keep_retrieval)
    candidates: list[tuple[tuple[int, ...], str]] = [
        (tuple(int(t) for t in point["ids"]), "retrieval") for point in retrieved.frontier
    ]
    config = FluentConfig(
        lambdas=budget.lambdas,
        steps=budget.fluent_steps,
        width=budget.fluent_width,
        max_frontier=budget.max_frontier,
        seed=seed,
        restart_every=max(budget.fluent_steps // 3, 1),
        init_beam=BeamConfig(beam_width=budget.beam_width, samples_per_beam=budget.beam_samples,
                             length=budget.beam_length, seed=seed),
    )
    fluent = fluent_run(objective, lm, setting.layout, config)
    candidates += [(tuple(int(t) for t in point["ids"]), "fluent") for point in fluent.frontier]
    seen: set[tuple[int, ...]] = set()
    unique = []
    for ids, attack in candidates:
        if ids and ids not in seen:
            seen.add(ids)
            unique.append((ids, attack))
    return unique


def judge(
    setting: AuditSetting, target: torch.Tensor, candidates: Sequence[tuple[tuple[int, ...], str]]
) -> list[PromptScore]:
    """Held-out shift metrics and naturalness scores for each candidate."""
    if not candidates:
        return []
    lm = setting.lm
    heldout_ids = [encode(lm.tokenizer, c) for c in setting.heldout_contexts]
    deltas = prompt_shifts(lm.model, setting.layout, [list(ids) for ids, _ in candidates], heldout_ids,
                           setting.layer, base=setting.heldout_base, pad_id=_pad(lm))
    texts = [lm.tokenizer.decode(list(ids)) for ids, _ in candidates]
    ppl = score_perplexity(lm, texts)
    realism = realism_scores(lm, texts, setting.classifier)
    scores = []
    for (ids, attack), text, d, p, r in zip(candidates, texts, deltas, ppl, realism, strict=True):
        m = shift_metrics(d, target, setting.generic_heldout)
        scores.append(PromptScore(
            prompt=text, ids=ids, attack=attack, cos=m.cos, specific_cos=float(m.specific_cos),
            per_position_cos=m.per_position_cos, norm_ratio=m.norm_ratio, perplexity=p.perplexity,
            worst_window_perplexity=p.worst_window_perplexity, realism=float(r),
            per_context_cos=m.per_context_cos,
        ))
    return scores


def per_context_shifts(setting: AuditSetting, ids: Sequence[int]) -> torch.Tensor:
    """(K, d) per-context mean shifts of one prompt on held-out contexts (for the bootstrap)."""
    lm = setting.lm
    heldout_ids = [encode(lm.tokenizer, c) for c in setting.heldout_contexts]
    deltas = prompt_shifts(lm.model, setting.layout, [list(ids)], heldout_ids, setting.layer,
                           base=setting.heldout_base, pad_id=_pad(lm))[0]
    return torch.stack([d.mean(dim=0) for d in deltas])


def pick_best(scores: Sequence[PromptScore], min_realism: float) -> PromptScore | None:
    """Highest held-out specific cosine among prompts judged natural enough."""
    natural = [s for s in scores if s.realism >= min_realism and math.isfinite(s.specific_cos)]
    return max(natural, key=lambda s: s.specific_cos) if natural else None
