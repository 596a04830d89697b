"""What every target of an audit at one set of layers shares: the context sets, the generic directions, the cached
corpus shifts and effects, the base activations, and the layer's natural magnitude.

Contexts. The shipped base contexts are split (`ContextSplit.of`): a fixed set of `MAGNITUDE_CONTEXTS` is set aside
for the natural magnitude reference (the same at every budget and seed, and never searched, chosen or reported on);
the rest is shuffled with the audit's seed and cut into optimization (the searches see only these), selection (which
choose each target's best prompt) and test contexts (every number that is reported or decides).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from realize.attacks.objectives import estimate_generics
from realize.corpus_shifts import CorpusShifts, corpus_shifts_at, natural_norms_at
from realize.data.chat import ChatLayout, Placement, chat_layout, encode
from realize.data.models import LoadedModel, pad_id
from realize.data.shift import aligned_activations_at, project_out
from realize.magnitude import NaturalNorms
from realize.prompt_effects import PromptEffects, prompt_effects
from realize.scorers.realism import RealismClassifier

WHITEN_RIDGE = 0.1  # whitening: covariance + this x its mean eigenvalue (keeps rare directions from exploding)
MAGNITUDE_CONTEXTS = 8  # contexts set aside for the natural magnitude reference
_MAGNITUDE_SEED = "natural magnitude"  # fixed: the reference is the same at every budget and audit seed


@dataclass(frozen=True)
class ContextSplit:
    """Three disjoint sets of base contexts (and the fixed magnitude contexts, disjoint from all three)."""

    optimization: tuple[str, ...]  # the search sees only these
    selection: tuple[str, ...]  # choose the best prompt
    test: tuple[str, ...]  # every reported or deciding number
    magnitude: tuple[str, ...] = ()  # the natural magnitude reference (chooses nothing)

    def subset(self, n_opt: int, n_selection: int, n_test: int) -> ContextSplit:
        """The first contexts of each set (e.g. the behavior axis's smaller sets)."""
        return ContextSplit(self.optimization[:n_opt], self.selection[:n_selection], self.test[:n_test],
                            self.magnitude)

    @classmethod
    def of(cls, contexts: Sequence[str], n_opt: int, n_selection: int, n_test: int, seed: int) -> ContextSplit:
        """The magnitude contexts set aside (fixed), then a seeded shuffle cut into test, selection and optimization
        sets (in that order)."""
        unique = list(dict.fromkeys(contexts))
        magnitude = sorted(random.Random(_MAGNITUDE_SEED).sample(range(len(unique)),
                                                                 min(MAGNITUDE_CONTEXTS, len(unique) // 4)))
        reserved = [unique[i] for i in magnitude]
        pool = [c for i, c in enumerate(unique) if i not in set(magnitude)]
        if n_opt + n_selection + n_test > len(pool):
            raise ValueError(f"n_opt_contexts + n_selection + n_test: at most {len(pool)} distinct contexts "
                             f"are available, asked for {n_opt + n_selection + n_test}")
        random.Random(seed).shuffle(pool)
        test, rest = pool[:n_test], pool[n_test:]
        return cls(tuple(rest[n_selection : n_selection + n_opt]), tuple(rest[:n_selection]), tuple(test),
                   tuple(reserved))


@dataclass(frozen=True)
class AuditSetting:
    """What every target at one (model, set of layers, placement) shares. A multi-layer steer is one target: its
    loss, shifts and corpus retrieval sum or average over its layers; everything is kept per layer."""

    lm: LoadedModel
    layers: tuple[int, ...]  # ascending
    placement: Placement
    layout: ChatLayout
    contexts: ContextSplit
    generic_opt: Mapping[int, torch.Tensor]  # g per layer on each context set, (d,)
    generic_selection: Mapping[int, torch.Tensor]
    generic_test: Mapping[int, torch.Tensor]
    corpora: Mapping[int, CorpusShifts]  # per layer: every shipped prompt's mean shift on the optimization contexts
    natural_norms: Mapping[int, NaturalNorms]  # per layer: the natural magnitude reference (g removed)
    generic_magnitude: Mapping[int, torch.Tensor]  # g per layer on the magnitude contexts (removed from a v too)
    residual_norm: Mapping[int, float]  # per layer: median residual-stream norm at the magnitude contexts' positions
    whiten: Mapping[int, torch.Tensor]  # per layer: (d, d) the content test's metric (`whitening`)
    classifier: RealismClassifier
    min_realism: float  # realism a prompt needs to count as natural
    base_selection: Mapping[int, tuple[torch.Tensor, ...]]  # per layer: prompt-free aligned activations per context
    base_test: Mapping[int, tuple[torch.Tensor, ...]]
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


def whitening(shifts: torch.Tensor, generic: torch.Tensor, ridge: float = WHITEN_RIDGE) -> torch.Tensor:
    """(d, d) W = (S + lam I)^(-1/2), S the covariance of natural prompts' shifts `shifts` (n, d) with g removed, lam
    = `ridge` x its mean eigenvalue. Measured in W, directions in which many instructions vary (an instruction's
    form) weigh less and the rarer ones (its content) more: on the content search's dev pairs the true prompt's
    margin over its same-form sibling grows from 0.16 (sd 0.09) to 0.24 (sd 0.07) at SmolLM2 layer 6 and from 0.06
    to 0.11 at layer 12 (`benchmarks/bench_fidelity.py`), which is why the content test is measured in it."""
    x = project_out(shifts.double(), generic.double())
    centered = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centered.T @ centered / max(x.shape[0] - 1, 1))
    lam = ridge * float(values.clamp_min(0).mean())
    return (vectors @ torch.diag((values.clamp_min(0) + lam).clamp_min(1e-12).rsqrt()) @ vectors.T).float()


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
    magnitude_contexts = contexts.magnitude or contexts.test
    generic_magnitude = estimate_generics(lm, layout, layers, magnitude_contexts)
    natural = natural_norms_at(lm, layout, layers, magnitude_contexts, generic_magnitude, fingerprint=fingerprint,
                               cache_dir=cache_dir)
    effects = None
    if behavior_contexts is not None:
        effects = prompt_effects(lm, layout, corpora[layers[-1]], behavior_contexts.optimization,
                                 cache_dir=cache_dir, fingerprint=fingerprint)
    generic_opt = estimate_generics(lm, layout, layers, contexts.optimization)
    whiten = {i: whitening(corpora[i].shifts[corpora[i].select("natural_prompts")[0]], generic_opt[i])
              for i in layers}
    return AuditSetting(
        lm=lm, layers=layers, placement=placement, layout=layout, contexts=contexts,
        generic_opt=generic_opt, whiten=whiten,
        generic_selection=estimate_generics(lm, layout, layers, contexts.selection),
        generic_test=estimate_generics(lm, layout, layers, contexts.test),
        corpora=corpora, natural_norms=natural, generic_magnitude=generic_magnitude,
        residual_norm={i: float(torch.cat(v).norm(dim=-1).median()) for i, v in base(magnitude_contexts).items()},
        classifier=classifier,
        min_realism=classifier.threshold if min_realism is None else min_realism,
        base_selection=base(contexts.selection), base_test=base(contexts.test),
        behavior_contexts=behavior_contexts, effects=effects,
    )
