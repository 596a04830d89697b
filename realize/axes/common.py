"""The one protocol every audit axis follows, and the driver that runs it.

An axis prepares a `Probe` for one target (what the vector does on its contexts), and the driver runs the same
steps on every axis:

    search        candidates from retrieval and the search (optimization contexts only)
    score         every candidate on selection contexts (chooses) and test contexts (reports), plus naturalness
    pick          the highest selection value among prompts at or above the realism threshold
    content test  the best prompt's form siblings (`realize.attacks.siblings`) and an unrelated-instruction panel,
                  scored the same way (activation: with the content cosine's evidence against the siblings);
                  positives also their own held-out prompt and its siblings
    hypotheses    vectors: the prompts the user suspects (`AuditConfig.hypotheses`), scored like the frontier
                  with their own siblings, never picked
    evidence      one `AxisEvidence`, the same shape on every axis

so no step is written twice and nothing branches on the axis outside its own module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from realize.attacks.siblings import SiblingConfig, form_siblings
from realize.config import AuditConfig
from realize.data.chat import encode
from realize.evidence import Axis, AxisEvidence, BehaviorFacts, Hypothesis, Measured, Score
from realize.resampling import FormEvidence
from realize.scorers.perplexity import PerplexityScore, score_perplexity
from realize.scorers.realism import realism_scores
from realize.setting import AuditSetting
from realize.targets import Target

Candidate = tuple[tuple[int, ...], str]  # (prompt ids, what found it)


class Probe(Protocol):
    """One target prepared on one axis."""

    def search(self, *, retrieval: bool) -> list[Candidate]:
        """Candidates from the optimization contexts (retrieval off: what the search does alone)."""
        ...

    def unrelated(self, size: int) -> list[Candidate]:
        """A panel of `size` corpus instructions unrelated to the target (seeded)."""
        ...

    def score(self, candidates: Sequence[Candidate], naturalness: Sequence[Naturalness], *,
              selection: bool = True) -> list[Measured]:
        """Each candidate on selection (unless `selection` is False: nan) and test contexts, with its
        per-test-context evidence."""
        ...

    def compare(self, prompt: tuple[int, ...], siblings: Sequence[Candidate],
                naturalness: Sequence[Naturalness]) -> tuple[list[Measured], FormEvidence | None]:
        """`prompt`'s form siblings on the test contexts (as `score` with `selection` False), and the content
        cosine's evidence of the prompt against them (None: not measured on this axis, or no sibling)."""
        ...

    def facts(self, best: Measured | None) -> BehaviorFacts | None:
        """What only this axis reports (behavior: effect, generations; activation: None)."""
        ...


class AuditAxis(Protocol):
    name: Axis

    def prepare(self, setting: AuditSetting, target: Target, goal: dict, config: AuditConfig,
                earlier: dict[Axis, AxisEvidence]) -> Probe:
        """The probe of `target` on this axis (`goal` = {layer: a v}; `earlier`: the axes measured before it)."""
        ...


@dataclass(frozen=True)
class Naturalness:
    perplexity: float
    worst_window_perplexity: float
    realism: float


def unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Non-empty candidates, each prompt once (the first attack that found it), in order."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for ids, name in candidates:
        if ids and ids not in seen:
            seen.add(ids)
            out.append((ids, name))
    return out


def naturalness(setting: AuditSetting, candidates: Sequence[Candidate], *, realism: bool = True) -> list[Naturalness]:
    """Perplexity (chat position, worst window) and realism of each candidate's text (`realism` False: nan, for
    prompts that are compared but never chosen, nor exported)."""
    if not candidates:
        return []
    texts = [setting.lm.tokenizer.decode(list(ids)) for ids, _ in candidates]
    ppl: list[PerplexityScore] = score_perplexity(setting.lm, texts, alone=False)  # only the chat position is read
    scores = realism_scores(setting.lm, texts, setting.classifier) if realism else [float("nan")] * len(texts)
    return [Naturalness(p.perplexity, p.worst_window_perplexity, float(r)) for p, r in zip(ppl, scores, strict=True)]


def unrelated_from_ranking(ranking: Sequence[int], clusters: Sequence[str], size: int, seed: int,
                           related: int = 24) -> list[int]:
    """The unrelated panel: `size` corpus rows, one per cluster, drawn with `seed`, none from a cluster of the
    `related` best-ranked rows (those the axis's retrieval would try for this target)."""
    near = {clusters[i] for i in ranking[:related]}
    first: dict[str, int] = {}
    for i in sorted(ranking):
        if clusters[i] not in near:
            first.setdefault(clusters[i], i)
    pool = sorted(first.values())
    chosen = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size].tolist()
    return [pool[j] for j in sorted(chosen)]


def pick(scores: Sequence[Score], min_realism: float, *, attacks: Sequence[str] | None = None) -> int | None:
    """Index of the highest selection value among prompts with realism >= `min_realism` (and, if given, found by one
    of `attacks`); None when no prompt qualifies."""
    best, index = -math.inf, None
    for i, s in enumerate(scores):
        if s.realism < min_realism or not math.isfinite(s.selection):
            continue
        if attacks is not None and s.attack not in attacks:
            continue
        if s.selection > best:
            best, index = s.selection, i
    return index


def _scored(setting: AuditSetting, probe: Probe, candidates: Sequence[Candidate]) -> list[Measured]:
    """Candidates that may be chosen: selection and test contexts, realism."""
    return probe.score(candidates, naturalness(setting, candidates)) if candidates else []


def _compared(setting: AuditSetting, probe: Probe, candidates: Sequence[Candidate]) -> list[Measured]:
    """Prompts that are only compared with a chosen one (siblings, the positives' own prompts): test contexts."""
    if not candidates:
        return []
    return probe.score(candidates, naturalness(setting, candidates, realism=False), selection=False)


def _siblings(setting: AuditSetting, probe: Probe, ids: tuple[int, ...],
              config: AuditConfig) -> tuple[tuple[Measured, ...], FormEvidence | None]:
    """The form siblings of `ids`, measured, and the content cosine's evidence against them."""
    if config.n_siblings < 1:
        return (), None
    siblings = [(s, "sibling") for s in form_siblings(setting.lm, setting.layout, ids,
                                                      SiblingConfig(n=config.n_siblings))]
    if not siblings:
        return (), None
    measured, form = probe.compare(ids, siblings, naturalness(setting, siblings, realism=False))
    return tuple(measured), form


def measure_axis(axis: AuditAxis, setting: AuditSetting, target: Target, goal: dict, config: AuditConfig,
                 earlier: dict[Axis, AxisEvidence]) -> AxisEvidence:
    """Run the protocol (module docstring) for one target on one axis."""
    probe = axis.prepare(setting, target, goal, config, earlier)
    measured = _scored(setting, probe, probe.search(retrieval=True))
    frontier = [m.score for m in measured]
    floor = setting.min_realism
    index = pick(frontier, floor)
    best = None if index is None else measured[index]
    corpus = pick(frontier, floor, attacks=("retrieval",))
    search_alone = None
    if target.kind == "positive":  # activation positives: what the search does without the corpus (reported)
        alone = [m.score for m in _scored(setting, probe, probe.search(retrieval=False))]
        found = pick(alone, floor)
        search_alone = None if found is None else alone[found]
    panel = []  # corpus instructions: natural by construction, chosen on selection contexts, no realism needed
    if config.n_unrelated:
        candidates = unique(probe.unrelated(config.n_unrelated))
        panel = probe.score(candidates, naturalness(setting, candidates, realism=False))
    chosen = pick([m.score for m in panel], -math.inf)
    hypotheses: tuple[Hypothesis, ...] = ()
    if target.kind == "vector" and config.hypotheses:  # the user's prompts: scored like the frontier, never picked
        suspected = [(tuple(encode(setting.lm.tokenizer, text)), "hypothesis") for text in config.hypotheses]
        hypotheses = tuple(Hypothesis(m, *_siblings(setting, probe, m.score.ids, config))
                           for m in _scored(setting, probe, suspected))
    true_prompt, true_siblings, true_form = None, (), None
    if target.prompt:
        ids = tuple(encode(setting.lm.tokenizer, target.prompt))
        (true_prompt,) = _compared(setting, probe, [(ids, "true prompt")])
        true_siblings, true_form = _siblings(setting, probe, ids, config)
    siblings, form = ((), None) if best is None else _siblings(setting, probe, best.score.ids, config)
    return AxisEvidence(
        axis=axis.name, frontier=tuple(frontier), best=best,
        best_corpus=None if corpus is None else frontier[corpus], best_search_alone=search_alone,
        siblings=siblings, unrelated=None if chosen is None else panel[chosen], true_prompt=true_prompt,
        true_siblings=true_siblings, behavior=probe.facts(best), hypotheses=hypotheses, form=form,
        true_form=true_form,
    )
