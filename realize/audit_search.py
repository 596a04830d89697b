"""One audit target: search for prompts on optimization contexts, choose on selection contexts, measure on test.

- `search`: the best corpus prompts by the activation objective on the optimization contexts (retrieval, one matrix
  product over the cached corpus shifts), plus the frontier of natural GCG started from the best of them.
- `judge`: every candidate re-measured on selection contexts (specific cosine only: it chooses) and on test
  contexts (raw and specific cosine, per-position cosine, norm ratio, FVE), and scored for naturalness.
- `pick`: the highest *selection* specific cosine among prompts at or above the realism threshold. Its test numbers
  are what is reported; the contexts that chose it never report it.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from realize.attacks.beam import BeamConfig
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective, estimate_generics
from realize.audit_types import PromptScore
from realize.config import SearchBudget
from realize.corpus_shifts import CorpusShifts, corpus_shifts_at, retrieval_losses
from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import aligned_activations_at, prompt_shifts_at, shift_metrics
from realize.prompt_effects import PromptEffects, prompt_effects
from realize.scorers.perplexity import score_perplexity
from realize.scorers.realism import RealismClassifier, realism_scores

logger = logging.getLogger(__name__)

Candidate = tuple[tuple[int, ...], str]  # (prompt ids, attack that found it)


@dataclass(frozen=True)
class ContextSplit:
    """Three disjoint sets of base contexts."""

    optimization: tuple[str, ...]  # the search sees only these
    selection: tuple[str, ...]  # choose the best prompt
    test: tuple[str, ...]  # every reported or deciding number

    def subset(self, n_opt: int, n_selection: int, n_test: int) -> ContextSplit:
        """The first contexts of each set (e.g. the behavior axis's smaller sets)."""
        return ContextSplit(self.optimization[:n_opt], self.selection[:n_selection], self.test[:n_test])

    @classmethod
    def of(cls, contexts: Sequence[str], n_opt: int, n_selection: int, n_test: int, seed: int) -> ContextSplit:
        """A seeded shuffle cut into test, selection and optimization sets (in that order)."""
        unique = list(dict.fromkeys(contexts))
        if n_opt + n_selection + n_test > len(unique):
            raise ValueError(f"n_opt_contexts + n_selection + n_test: at most {len(unique)} distinct contexts "
                             f"are available, asked for {n_opt + n_selection + n_test}")
        random.Random(seed).shuffle(unique)
        test, rest = unique[:n_test], unique[n_test:]
        return cls(tuple(rest[n_selection : n_selection + n_opt]), tuple(rest[:n_selection]), tuple(test))


Goal = dict[int, torch.Tensor]  # layer -> a*v at that layer (d,): one steer, at one layer or several


@dataclass(frozen=True)
class AuditSetting:
    """What every target at one (model, set of layers, placement) shares. A multi-layer steer is one target: its
    loss, shifts and corpus retrieval sum or average over its layers; everything is kept per layer."""

    lm: LoadedModel
    layers: tuple[int, ...]  # ascending
    placement: Placement
    layout: ChatLayout
    contexts: ContextSplit
    generic_opt: dict[int, torch.Tensor]  # g per layer on each context set, (d,)
    generic_selection: dict[int, torch.Tensor]
    generic_test: dict[int, torch.Tensor]
    corpora: dict[int, CorpusShifts]  # per layer: every shipped prompt's mean shift on the optimization contexts
    classifier: RealismClassifier
    min_realism: float  # realism a prompt needs to count as natural
    base_selection: dict[int, tuple[torch.Tensor, ...]]  # per layer: prompt-free aligned activations per context
    base_test: dict[int, tuple[torch.Tensor, ...]]
    behavior_contexts: ContextSplit | None = None  # the behavior axis's subsets of `contexts` (None: axis off)
    effects: PromptEffects | None = None  # the retrieval corpus's first-answer effects (behavior retrieval)

    @property
    def layer(self) -> int:
        """The deepest layer (where the forward stops)."""
        return self.layers[-1]

    @property
    def corpus(self) -> CorpusShifts:
        """The corpus (prompts, clusters) with its shifts at the deepest layer."""
        return self.corpora[self.layer]


def make_setting(lm: LoadedModel, layers: int | Sequence[int], placement: Placement, contexts: ContextSplit,
                 classifier: RealismClassifier, min_realism: float | None, *, fingerprint: str,
                 cache_dir: Path | None, behavior_contexts: ContextSplit | None = None,
                 show_progress: bool = False) -> AuditSetting:
    """Everything shared at one layer or set of layers. `behavior_contexts` (subsets of `contexts`) turns the
    behavior axis on: the corpus's first-answer effects on its optimization contexts are then computed (or read
    from the cache)."""
    layers = (layers,) if isinstance(layers, int) else tuple(sorted(set(layers)))
    layout = chat_layout(lm.tokenizer, placement)
    pad = pad_id(lm.tokenizer)

    def base(texts: Sequence[str]) -> dict[int, tuple[torch.Tensor, ...]]:
        ids = [encode(lm.tokenizer, c) for c in texts]
        return {i: tuple(v) for i, v in aligned_activations_at(lm.model, layout, None, ids, layers, pad_id=pad).items()}

    corpora = corpus_shifts_at(lm, layout, layers, contexts.optimization, fingerprint=fingerprint,
                               cache_dir=cache_dir, show_progress=show_progress)
    effects = None
    if behavior_contexts is not None:
        effects = prompt_effects(lm, layout, corpora[layers[-1]], behavior_contexts.optimization,
                                 cache_dir=cache_dir, fingerprint=fingerprint)
    return AuditSetting(
        lm=lm, layers=layers, placement=placement, layout=layout, contexts=contexts,
        generic_opt=estimate_generics(lm, layout, layers, contexts.optimization),
        generic_selection=estimate_generics(lm, layout, layers, contexts.selection),
        generic_test=estimate_generics(lm, layout, layers, contexts.test),
        corpora=corpora, classifier=classifier,
        min_realism=classifier.threshold if min_realism is None else min_realism,
        base_selection=base(contexts.selection), base_test=base(contexts.test),
        behavior_contexts=behavior_contexts, effects=effects,
    )


def retrieve(setting: AuditSetting, goal: Goal, keep: int, exclude_clusters: Sequence[str] = ()) -> list[Candidate]:
    """The `keep` natural prompts (retrieval corpus, excluded clusters removed) with the lowest objective loss (summed
    over the goal's layers) on the optimization contexts, from the cached shifts."""
    corpus = setting.corpus
    rows = [i for i, (c, k) in enumerate(zip(corpus.corpora, corpus.clusters, strict=True))
            if c == "natural_prompts" and k not in set(exclude_clusters)]
    if not rows or keep < 1:
        return []
    losses = sum(retrieval_losses(setting.corpora[i].shifts[rows], t, setting.generic_opt[i]) for i, t in goal.items())
    order = losses.argsort()[:keep].tolist()  # type: ignore[union-attr]
    return [(tuple(encode(setting.lm.tokenizer, corpus.prompts[rows[i]])), "retrieval") for i in order]


def search(setting: AuditSetting, goal: Goal, budget: SearchBudget, *, seed: int,
           exclude_clusters: Sequence[str] = (), retrieval: bool = True) -> list[Candidate]:
    """Candidate prompts for `goal` = {layer: a*v} (one steer, its loss summed over its layers), unique ids. With `retrieval` (the audit's search): the best corpus
    prompts, then natural GCG (word-level moves, fluency budget; `realize.attacks.natural`) from each of the best
    `budget.starts` of them. Without it (what the search alone does, reported for positives): natural GCG from
    the LM-guided beam's prompt."""
    lm = setting.lm
    candidates = retrieve(setting, goal, budget.keep_retrieval, exclude_clusters) if retrieval else []
    objective = ActivationShiftObjective(
        lm.model, lm.tokenizer, setting.layout, dict(goal), None,
        [encode(lm.tokenizer, c) for c in setting.contexts.optimization],
        generic={i: setting.generic_opt[i] for i in goal}, config=ActivationObjectiveConfig(),
    )
    beam = BeamConfig(beam_width=budget.beam_width, samples_per_beam=budget.beam_samples,
                      length=budget.beam_length, seed=seed)
    starts: list[tuple[int, ...] | None] = [ids for ids, _ in candidates[: budget.starts]] or [None]
    attack = "natural" if retrieval else "natural-from-beam"
    for i, start in enumerate(starts):
        config = NaturalConfig(steps=budget.steps, width=budget.width, max_frontier=budget.max_frontier,
                               seed=seed + i, init_beam=beam)
        result = natural_run(objective, lm, setting.layout, config, init=start)
        candidates += [(point.ids, attack) for point in result.frontier]
    return unique(candidates)


def unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Non-empty candidates, each prompt once (the first attack that found it), in order."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for ids, name in candidates:
        if ids and ids not in seen:
            seen.add(ids)
            out.append((ids, name))
    return out


def _per_context(deltas: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([d.mean(dim=0) for d in deltas])


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def judge(setting: AuditSetting, goal: Goal,
          candidates: Sequence[Candidate]) -> tuple[list[PromptScore], list[dict[int, torch.Tensor]]]:
    """Selection and test metrics and naturalness of each candidate; also each candidate's per-test-context mean
    shifts {layer: (K, d)} (for the bootstrap evidence of whichever is picked). Several layers: each number is the
    mean over the layers (FVE pools them: 1 - sum |s_i - t_i|^2 / sum |t_i|^2); `per_layer` keeps the breakdown."""
    if not candidates:
        return [], []
    lm, split = setting.lm, setting.contexts
    layers = sorted(goal)
    contexts = [encode(lm.tokenizer, c) for c in (*split.selection, *split.test)]
    deltas = prompt_shifts_at(lm.model, setting.layout, [list(ids) for ids, _ in candidates], contexts, layers,
                              base={i: [*setting.base_selection[i], *setting.base_test[i]] for i in layers},
                              pad_id=pad_id(lm.tokenizer))
    n_sel = len(split.selection)
    texts = [lm.tokenizer.decode(list(ids)) for ids, _ in candidates]
    ppl = score_perplexity(lm, texts)
    realism = realism_scores(lm, texts, setting.classifier)
    scores, per_context = [], []
    for c, ((ids, attack), text, p, r) in enumerate(zip(candidates, texts, ppl, realism, strict=True)):
        selection, test, shifts, residual, energy = [], [], {}, 0.0, 0.0
        for i in layers:
            d, t = deltas[i][c], goal[i].float()
            selection.append(shift_metrics(d[:n_sel], t, setting.generic_selection[i]))
            test.append(shift_metrics(d[n_sel:], t, setting.generic_test[i]))
            shifts[i] = _per_context(d[n_sel:])
            residual += float((shifts[i].mean(dim=0) - t).pow(2).sum())
            energy += float(t.pow(2).sum())
        per_layer = tuple((i, m.cos, float(m.specific_cos), m.norm_ratio) for i, m in zip(layers, test, strict=True))
        scores.append(PromptScore(
            prompt=text, ids=ids, attack=attack,
            selection_specific_cos=_mean([float(m.specific_cos) for m in selection]),
            cos=_mean([m.cos for m in test]), specific_cos=_mean([float(m.specific_cos) for m in test]),
            per_position_cos=_mean([m.per_position_cos for m in test]),
            norm_ratio=_mean([m.norm_ratio for m in test]), fve=1.0 - residual / max(energy, 1e-12),
            perplexity=p.perplexity, worst_window_perplexity=p.worst_window_perplexity, realism=float(r),
            per_context_cos=tuple(_mean(v) for v in zip(*(m.per_context_cos for m in test), strict=True)),
            per_layer=per_layer if len(layers) > 1 else (),
        ))
        per_context.append(shifts)
    return scores, per_context


def pick(scores: Sequence[PromptScore], min_realism: float, *, attacks: Sequence[str] | None = None,
         exclude_attacks: Sequence[str] = ()) -> int | None:
    """Index of the highest selection-context specific cosine among prompts with realism >= `min_realism` (and,
    if given, found by one of `attacks` / none of `exclude_attacks`); None when no prompt qualifies."""
    best, index = -math.inf, None
    for i, s in enumerate(scores):
        if s.realism < min_realism or not math.isfinite(s.selection_specific_cos):
            continue
        if (attacks is not None and s.attack not in attacks) or s.attack in exclude_attacks:
            continue
        if s.selection_specific_cos > best:
            best, index = s.selection_specific_cos, i
    return index

