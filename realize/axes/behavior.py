"""The behavior axis: can an ordinary prompt make the model do what the steer does?

Contexts are the audit's three sets, `behavior_contexts` of the optimization and selection sets and
`behavior_test_contexts` of the test set; on each, the steered model's continuation is computed once
(`realize.data.steered`). Then:

1. retrieval by behavior: every natural prompt's cached effect on the first answer token (`prompt_effects`) is
   ranked by cosine with the steer's own effect there (one matrix product), and the best `behavior_probe` are
   scored with the real objective (KL along the steered continuations);
2. natural GCG (`realize.attacks.natural`) on the behavior objective, from the best of them;
3. score: the pooled recovery 1 - sum KL(S||P) / sum KL(S||B) on selection contexts (it chooses) and on test
   contexts (it is reported, never floored), with effect sizes and the direction of the effect
   (`realize.scorers.behavior.measure_prompts`), and the per-test-context sums for the joint bootstrap;
4. unrelated panel: corpus instructions from clusters the effect ranking does not put near the steer.
Vectors also get the activation axis's best prompt measured here and the generations side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from realize.attacks.baselines import RetrievalConfig, natural_retrieval
from realize.attacks.behavior_objective import BehaviorObjective
from realize.attacks.natural import NaturalConfig
from realize.attacks.natural import run as natural_run
from realize.axes.common import Candidate, Naturalness, unique, unrelated_from_ranking
from realize.config import AuditConfig
from realize.data.chat import encode
from realize.data.steered import SteeredContext, greedy_batch, steered_contexts
from realize.evidence import ActivationScore, Axis, AxisEvidence, BehaviorFacts, BehaviorScore, Generation, Measured
from realize.prompt_effects import PromptEffects
from realize.resampling import FormEvidence, RatioEvidence
from realize.scorers.behavior import BehaviorConfig, BehaviorMeasure, measure_prompts
from realize.setting import AuditSetting
from realize.targets import Target

RELATED = 24  # the unrelated panel leaves out the clusters of this many best-ranked corpus prompts


def rank_by_behavior(effects: PromptEffects, opt: Sequence[SteeredContext],
                     exclude_clusters: Sequence[str] = ()) -> list[int]:
    """Corpus indices (clusters in `exclude_clusters` left out), by the cosine of each prompt's first-answer effect
    with the steer's, best first."""
    steer_effect = torch.stack([c.steered[0].exp() - c.base[0].exp() for c in opt]).mean(0)
    excluded = set(exclude_clusters)
    allowed = [i for i, k in enumerate(effects.clusters) if k not in excluded]
    if not allowed:
        return []
    cos = effects.cosine(steer_effect, allowed)
    return [allowed[i] for i in cos.argsort(descending=True).tolist()]


def unrelated_panel(effects: PromptEffects, opt: Sequence[SteeredContext], size: int, seed: int) -> list[str]:
    """`size` corpus instructions, one per cluster, none from a cluster of the `RELATED` prompts closest to the
    steer's first-answer effect (`realize.axes.common.unrelated_from_ranking`)."""
    rows = unrelated_from_ranking(rank_by_behavior(effects, opt), effects.clusters, size, seed, RELATED)
    return [effects.prompts[i] for i in rows]


def _score(selection: float, measure: BehaviorMeasure, ids: tuple[int, ...], attack: str, nat: Naturalness,
           text: str) -> Measured:
    score = BehaviorScore(
        prompt=text, ids=ids, attack=attack, selection=selection, value=measure.recovery,
        per_context=measure.per_context, kl=measure.kl, prompt_effect=measure.prompt_effect,
        direction_cos=measure.direction_cos, effect_ratio=measure.effect_ratio, perplexity=nat.perplexity,
        worst_window_perplexity=nat.worst_window_perplexity, realism=nat.realism)
    return Measured(score, RatioEvidence(measure.kl_sums, measure.effect_sums))


@dataclass(frozen=True)
class BehaviorProbe:
    setting: AuditSetting
    target: Target
    config: AuditConfig
    opt: tuple[SteeredContext, ...]
    selection: tuple[SteeredContext, ...]
    test: tuple[SteeredContext, ...]
    steer_norm: float
    activation_best: ActivationScore | None  # vectors: the activation axis's best prompt

    def search(self, *, retrieval: bool) -> list[Candidate]:
        """Retrieved by behavior, then natural GCG on the behavior objective from the best (retrieval is the
        behavior search's only start)."""
        setting, budget = self.setting, self.config.search
        assert setting.effects is not None and budget is not None
        lm = setting.lm
        objective = BehaviorObjective(lm.model, lm.tokenizer, setting.layout, list(self.opt))
        ranking = rank_by_behavior(setting.effects, self.opt, self.target.exclude_clusters)
        if not ranking or not retrieval:
            return []
        probe = tuple(setting.effects.prompts[i] for i in ranking[: budget.behavior_probe])
        found = natural_retrieval(objective, lm, setting.layout, RetrievalConfig(prompts=probe,
                                                                                keep=budget.keep_retrieval))
        candidates: list[Candidate] = [(point.ids, "retrieval") for point in found.frontier]
        if candidates:
            natural = NaturalConfig(steps=budget.behavior_steps, width=budget.behavior_width,
                                    max_frontier=budget.max_frontier, frontier_metrics=False,  # only the ids are read
                                    seed=self.config.seed)
            result = natural_run(objective, lm, setting.layout, natural, init=candidates[0][0])
            candidates += [(point.ids, "natural") for point in result.frontier]
        return unique(candidates)

    def unrelated(self, size: int) -> list[Candidate]:
        assert self.setting.effects is not None
        tok = self.setting.lm.tokenizer
        return [(tuple(encode(tok, p)), "unrelated panel")
                for p in unrelated_panel(self.setting.effects, self.opt, size, self.config.seed)]

    def score(self, candidates: Sequence[Candidate], naturalness: Sequence[Naturalness], *,
              selection: bool = True) -> list[Measured]:
        if not candidates:
            return []
        lm, layout = self.setting.lm, self.setting.layout
        ids = [list(c[0]) for c in candidates]
        reported = measure_prompts(lm, layout, self.test, ids)
        chosen: list[float] = ([m.recovery for m in measure_prompts(lm, layout, self.selection, ids)] if selection
                               else [float("nan")] * len(ids))
        return [_score(sel, rep, tuple(i), attack, nat, lm.tokenizer.decode(i))
                for i, (_, attack), sel, rep, nat in zip(ids, candidates, chosen, reported, naturalness, strict=True)]

    def compare(self, prompt: tuple[int, ...], siblings: Sequence[Candidate],
                naturalness: Sequence[Naturalness]) -> tuple[list[Measured], FormEvidence | None]:
        """Form siblings on the test contexts; no content cosine on this axis (recovery has no direction)."""
        return self.score(siblings, naturalness, selection=False), None

    def facts(self, best: Measured | None) -> BehaviorFacts:
        n = sum(len(c.continuation) for c in self.test)
        effect = sum(float(c.effect.sum()) for c in self.test) / max(n, 1)
        activation_prompt, generations = None, ()
        if self.target.kind == "vector":
            if self.activation_best is not None:
                a = self.activation_best
                (m,) = measure_prompts(self.setting.lm, self.setting.layout, self.test, [list(a.ids)])
                activation_prompt = BehaviorScore(
                    prompt=a.prompt, ids=a.ids, attack="activation best", selection=float("nan"), value=m.recovery,
                    per_context=m.per_context, kl=m.kl, prompt_effect=m.prompt_effect,
                    direction_cos=m.direction_cos, effect_ratio=m.effect_ratio, perplexity=a.perplexity,
                    worst_window_perplexity=a.worst_window_perplexity, realism=a.realism)
            if best is not None:
                generations = self._generations(best.score.ids)
        return BehaviorFacts(effect=effect, inert=effect < BehaviorConfig().min_effect_kl, steer_norm=self.steer_norm,
                             generations=generations, activation_prompt=activation_prompt)

    def _generations(self, ids: tuple[int, ...]) -> tuple[Generation, ...]:
        """Steered / prompted (the best prompt) / base greedy continuations of the test contexts."""
        lm, layout, test = self.setting.lm, self.setting.layout, self.test
        prompted = [layout.place(list(ids), c.context_ids).ids for c in test]
        own = greedy_batch(lm, prompted + [c.base_ids for c in test], self.config.behavior_tokens)
        decode = lm.tokenizer.decode
        return tuple(Generation(c.context, decode(list(c.continuation), skip_special_tokens=True).strip(),
                                decode(own[i], skip_special_tokens=True).strip(),
                                decode(own[len(test) + i], skip_special_tokens=True).strip())
                     for i, c in enumerate(test))


class BehaviorAxis:
    name: Axis = "behavior"

    def prepare(self, setting: AuditSetting, target: Target, goal: dict[int, torch.Tensor], config: AuditConfig,
                earlier: dict[Axis, AxisEvidence]) -> BehaviorProbe:
        split = setting.behavior_contexts
        assert split is not None and setting.effects is not None, "the setting was built without the behavior axis"
        directions = {i: t for i, t in goal.items()}  # the steer a*v per layer, applied at scale 1

        def run(contexts: tuple[str, ...]) -> tuple[SteeredContext, ...]:
            return tuple(steered_contexts(setting.lm, setting.layout, directions, 1.0, contexts,
                                          config.behavior_tokens))

        activation = earlier.get("activation")
        best = activation.best.score if activation is not None and activation.best is not None else None
        return BehaviorProbe(
            setting, target, config, run(split.optimization), run(split.selection), run(split.test),
            float(torch.linalg.vector_norm(torch.cat(list(goal.values())))),
            best if isinstance(best, ActivationScore) else None)
