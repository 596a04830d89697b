"""The activation axis: can an ordinary prompt produce the steer's shift at its layer(s)?

- search: the best corpus prompts by the activation objective on the optimization contexts (retrieval: one matrix
  product over the cached corpus shifts), then natural GCG (`realize.attacks.natural`: whole-word moves under a
  fluency budget) from the best of them; without retrieval, natural GCG from the LM-guided beam's prompt;
- score: specific cosine on selection contexts (it chooses); on test contexts raw and specific cosine, per-position
  cosine, norm ratio and FVE (reported), the per-test-context evidence of the specific cosine, and of the same
  cosine in the whitened metric (`realize.setting.whitening`), in which the content test compares prompts;
- siblings: the best prompt's form siblings scored like it, with the content cosine's evidence
  (`realize.resampling.FormEvidence`: the prompt against its siblings, in the same metric);
- unrelated panel: corpus instructions from clusters that retrieval does not rank near the target.

Several layers: every number is the mean over the layers (FVE pools them: 1 - sum |s_i - t_i|^2 / sum |t_i|^2);
`per_layer` keeps the breakdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from realize.attacks.beam import BeamConfig
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.attacks.objectives import ActivationObjectiveConfig, ActivationShiftObjective
from realize.axes.common import Candidate, Naturalness, unique, unrelated_from_ranking
from realize.config import AuditConfig
from realize.corpus_shifts import retrieval_losses
from realize.data.chat import encode
from realize.data.models import pad_id
from realize.data.shift import prompt_shifts_at, shift_metrics
from realize.evidence import ActivationScore, AxisEvidence, Axis, BehaviorFacts, Measured
from realize.resampling import ContextEvidence, FormEvidence, LayersEvidence, specific_metric
from realize.setting import AuditSetting
from realize.targets import Target

Goal = dict[int, torch.Tensor]  # layer -> a*v at that layer (d,)
RELATED = 24  # the unrelated panel leaves out the clusters of this many best-ranked corpus prompts


def retrieval_ranking(setting: AuditSetting, goal: Goal, exclude_clusters: Sequence[str] = ()) -> list[int]:
    """Rows of the retrieval corpus (natural prompts, excluded clusters removed), lowest objective loss (summed over
    the goal's layers, from the cached shifts of the optimization contexts) first."""
    corpus = setting.corpus
    excluded = set(exclude_clusters)
    rows = [i for i, (c, k) in enumerate(zip(corpus.corpora, corpus.clusters, strict=True))
            if c == "natural_prompts" and k not in excluded]
    if not rows:
        return []
    losses = sum(retrieval_losses(setting.corpora[i].shifts[rows], t, setting.generic_opt[i]) for i, t in goal.items())
    assert isinstance(losses, torch.Tensor)
    return [rows[i] for i in losses.argsort().tolist()]


def retrieve(setting: AuditSetting, goal: Goal, keep: int, exclude_clusters: Sequence[str] = ()) -> list[Candidate]:
    """The `keep` natural prompts with the lowest objective loss on the optimization contexts."""
    tok, corpus = setting.lm.tokenizer, setting.corpus
    return [(tuple(encode(tok, corpus.prompts[i])), "retrieval")
            for i in retrieval_ranking(setting, goal, exclude_clusters)[: max(keep, 0)]]


def search(setting: AuditSetting, goal: Goal, config: AuditConfig, *, exclude_clusters: Sequence[str] = (),
           retrieval: bool = True) -> list[Candidate]:
    """Candidate prompts for `goal` (one steer, its loss summed over its layers), unique ids (module docstring)."""
    lm, budget, seed = setting.lm, config.search, config.seed
    assert budget is not None
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
        natural = NaturalConfig(steps=budget.steps, width=budget.width, max_frontier=budget.max_frontier,
                                frontier_metrics=False, seed=seed + i, init_beam=beam)  # only the ids are read
        result = natural_run(objective, lm, setting.layout, natural, init=start)
        candidates += [(point.ids, attack) for point in result.frontier]
    return unique(candidates)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values))


def _per_context_shifts(setting: AuditSetting, layers: Sequence[int], candidates: Sequence[Candidate], *,
                        selection: bool) -> tuple[int, dict[int, list[list[torch.Tensor]]]]:
    """(number of selection contexts, per layer the per-position shifts [candidate][context] on the selection
    contexts (when `selection`) then the test contexts)."""
    lm, split = setting.lm, setting.contexts
    chosen_on = split.selection if selection else ()
    contexts = [encode(lm.tokenizer, c) for c in (*chosen_on, *split.test)]
    base_chosen = setting.base_selection if selection else {i: () for i in layers}
    deltas = prompt_shifts_at(lm.model, setting.layout, [list(ids) for ids, _ in candidates], contexts, layers,
                              base={i: [*base_chosen[i], *setting.base_test[i]] for i in layers},
                              pad_id=pad_id(lm.tokenizer))
    return len(chosen_on), deltas


def score(setting: AuditSetting, goal: Goal, candidates: Sequence[Candidate], naturalness: Sequence[Naturalness],
          *, selection: bool = True) -> list[Measured]:
    """Selection and test metrics of each candidate, with the per-test-context evidence of its specific cosine
    (`selection` False: test contexts only, for prompts that are compared, never chosen; their selection is nan)."""
    if not candidates:
        return []
    n_sel, deltas = _per_context_shifts(setting, sorted(goal), candidates, selection=selection)
    return _measured(setting, goal, candidates, naturalness, n_sel, deltas)


def _measured(setting: AuditSetting, goal: Goal, candidates: Sequence[Candidate],
              naturalness: Sequence[Naturalness], n_sel: int,
              deltas: dict[int, list[list[torch.Tensor]]]) -> list[Measured]:
    """The `Measured` of each candidate from its shifts (`_per_context_shifts`)."""
    lm, layers = setting.lm, sorted(goal)
    out = []
    for c, ((ids, attack), nat) in enumerate(zip(candidates, naturalness, strict=True)):
        chosen: list[float] = []
        test, parts, whitened, residual, energy = [], [], [], 0.0, 0.0
        for i in layers:
            d, t = deltas[i][c], goal[i].float()
            if n_sel:
                chosen.append(float(shift_metrics(d[:n_sel], t, setting.generic_selection[i]).specific_cos))
            test.append(shift_metrics(d[n_sel:], t, setting.generic_test[i]))
            per_context = _test_means(deltas[i][c][n_sel:])
            parts.append(ContextEvidence.from_shifts(per_context, t, setting.generic_test[i]))
            whitened.append(ContextEvidence.from_shifts(per_context, t, setting.generic_test[i], setting.whiten[i]))
            residual += float((per_context.mean(dim=0) - t).pow(2).sum())
            energy += float(t.pow(2).sum())
        per_layer = tuple((i, m.cos, float(m.specific_cos), m.norm_ratio) for i, m in zip(layers, test, strict=True))
        score_ = ActivationScore(
            prompt=lm.tokenizer.decode(list(ids)), ids=ids, attack=attack,
            selection=_mean(chosen) if chosen else float("nan"),
            value=_mean([float(m.specific_cos) for m in test]), cos=_mean([m.cos for m in test]),
            per_position_cos=_mean([m.per_position_cos for m in test]),
            norm_ratio=_mean([m.norm_ratio for m in test]), fve=1.0 - residual / max(energy, 1e-12),
            perplexity=nat.perplexity, worst_window_perplexity=nat.worst_window_perplexity, realism=nat.realism,
            per_context=tuple(_mean(v) for v in zip(*(m.per_context_cos for m in test), strict=True)),
            per_layer=per_layer if len(layers) > 1 else (),
        )
        out.append(Measured(score_, parts[0] if len(parts) == 1 else LayersEvidence(tuple(parts)),
                            whitened[0] if len(whitened) == 1 else LayersEvidence(tuple(whitened))))
    return out


def _test_means(per_position: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-position shifts [context] (n_k, d) -> each context's mean shift (K, d)."""
    return torch.stack([x.mean(dim=0) for x in per_position])


def compare_with_siblings(setting: AuditSetting, goal: Goal, prompt: tuple[int, ...],
                          siblings: Sequence[Candidate],
                          naturalness: Sequence[Naturalness]) -> tuple[list[Measured], FormEvidence | None]:
    """The form siblings of `prompt` on the test contexts (as `score` with `selection` False), and the content
    cosine's evidence of the prompt against them (`realize.resampling.FormEvidence`; None without siblings). The
    prompt is forwarded once more on the test contexts; each prompt's shifts are computed alone, so the siblings'
    numbers are those `score` gives."""
    if not siblings:
        return [], None
    layers = sorted(goal)
    _, deltas = _per_context_shifts(setting, layers, [(prompt, "prompt"), *siblings], selection=False)
    measured = _measured(setting, goal, siblings, naturalness, 0, {i: deltas[i][1:] for i in layers})
    form = FormEvidence.from_shifts([
        specific_metric(torch.stack([_test_means(p) for p in deltas[i]]), goal[i].float(), setting.generic_test[i],
                        setting.whiten[i])
        for i in layers])
    return measured, form


def unrelated_panel(setting: AuditSetting, goal: Goal, size: int, seed: int) -> list[Candidate]:
    """`size` corpus instructions, one per cluster, from the clusters that retrieval does not rank among its best
    `RELATED` for this goal (`realize.axes.common.unrelated_from_ranking`)."""
    corpus = setting.corpus
    rows = unrelated_from_ranking(retrieval_ranking(setting, goal), corpus.clusters, size, seed, RELATED)
    return [(tuple(encode(setting.lm.tokenizer, corpus.prompts[i])), "unrelated panel") for i in rows]


@dataclass(frozen=True)
class ActivationProbe:
    setting: AuditSetting
    target: Target
    goal: Goal
    config: AuditConfig

    def search(self, *, retrieval: bool) -> list[Candidate]:
        return search(self.setting, self.goal, self.config, exclude_clusters=self.target.exclude_clusters,
                      retrieval=retrieval)

    def unrelated(self, size: int) -> list[Candidate]:
        return unrelated_panel(self.setting, self.goal, size, self.config.seed)

    def score(self, candidates: Sequence[Candidate], naturalness: Sequence[Naturalness], *,
              selection: bool = True) -> list[Measured]:
        return score(self.setting, self.goal, candidates, naturalness, selection=selection)

    def compare(self, prompt: tuple[int, ...], siblings: Sequence[Candidate],
                naturalness: Sequence[Naturalness]) -> tuple[list[Measured], FormEvidence | None]:
        return compare_with_siblings(self.setting, self.goal, prompt, siblings, naturalness)

    def facts(self, best: Measured | None) -> BehaviorFacts | None:
        return None


class ActivationAxis:
    name: Axis = "activation"

    def prepare(self, setting: AuditSetting, target: Target, goal: Goal, config: AuditConfig,
                earlier: dict[Axis, AxisEvidence]) -> ActivationProbe:
        return ActivationProbe(setting, target, goal, config)
