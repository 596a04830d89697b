"""Turn the evidence of every item of an audit into verdicts, per axis, using the controls of the same layer(s).

- Activation axis: a vector is judged against the natural-distribution nulls of its layer and norm bin and the
  activation positives of its layer (held-out natural prompts' shifts); the verdict is qualified by magnitude.
- Behavior axis: against the behavior values of the same nulls and the behavior positives (vectors distilled from
  held-out natural prompts). A vector that barely changes the outputs is "inconclusive" there: there is nothing to
  reproduce. A vector whose best prompt barely beats an unrelated instruction is "generically realizable".
- Controls are judged leave-one-out (itself removed from its group); positives and isotropic nulls use the nulls of
  the nearest norm bin. Isotropic nulls are a labelled reference and never decide.
- Controls without a natural-enough prompt have no value: they are not usable, so they can make a verdict
  "inconclusive" but never count as a measured 0.
- `joint_bootstrap` resamples test contexts jointly for the item and its controls and recomputes the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from realize.audit_types import Axis, BehaviorScore, Judgement, JudgedAudit, PromptScore, VectorAudit
from realize.targets import norm_bin
from realize.verdict import (
    Evidence,
    VerdictThresholds,
    combine,
    joint_bootstrap,
    judge_direction,
    magnitude_note,
)

POSITIVE_KIND = {"activation": "positive", "behavior": "behavior-positive"}
_RANK = {"realizable": 2, "partially realizable": 1}


def bins(audit: VectorAudit) -> tuple[int, ...]:
    """The norm bin of the audited steer at each of its layers."""
    per_layer = audit.magnitude.per_layer
    if per_layer:
        return tuple(norm_bin(norm) for _, norm, _, _ in per_layer)
    return (norm_bin(audit.magnitude.target_norm),)


def _nearest_bin_nulls(pool: Sequence[VectorAudit], audit: VectorAudit, axis: Axis) -> list[VectorAudit]:
    nulls = [a for a in pool if a.kind == "null" and axis in a.axes and a.layers == audit.layers]
    if not nulls:
        return []
    want = bins(audit)
    nearest = min({bins(a) for a in nulls}, key=lambda b: (sum(abs(x - y) for x, y in zip(b, want, strict=True)), b))
    return [a for a in nulls if bins(a) == nearest]


def controls_for(audit: VectorAudit, pool: Sequence[VectorAudit],
                 axis: Axis = "activation") -> tuple[list[VectorAudit], list[VectorAudit]]:
    """The (null, positive) controls that judge `audit` on `axis`, itself excluded."""
    nulls = [a for a in _nearest_bin_nulls(pool, audit, axis) if a.vector_id != audit.vector_id]
    positives = [a for a in pool if a.kind == POSITIVE_KIND[axis] and a.vector_id != audit.vector_id]
    return nulls, positives


def _evidence(audit: VectorAudit, axis: Axis) -> Evidence | None:
    if axis == "activation":
        return audit.evidence
    return None if audit.behavior is None else audit.behavior.evidence


def prompt_verdict(score: PromptScore, audit: VectorAudit, null: Sequence[float], positive: Sequence[float],
                   thresholds: VerdictThresholds) -> str:
    """The activation verdict one prompt earns on its own numbers: "not natural" below the realism threshold; else
    the weaker of the direction verdicts of its selection and its test specific cosine (it must pass on both, so
    keeping it in a dataset is not a choice made on the numbers it reports), combined with the magnitude."""
    if score.realism < audit.min_realism:
        return "not natural"
    verdicts = [judge_direction(v, null, positive, thresholds).verdict
                for v in (score.selection_specific_cos, score.specific_cos)]
    if "inconclusive" in verdicts:
        return "inconclusive"
    weakest = min(verdicts, key=lambda v: _RANK.get(v, 0))
    return combine(weakest, audit.magnitude, thresholds)


def generically(verdict: str, specific: float | None, thresholds: VerdictThresholds) -> str:
    """"generically realizable" for a (partially) realizable behavior verdict whose prompt closes less than
    `generic_specific` of what an unrelated instruction leaves (`specific` None: no panel, unchanged)."""
    if verdict in _RANK and specific is not None and not specific >= thresholds.generic_specific:
        return "generically realizable"
    return verdict


def _behavior_prompt_verdict(score: BehaviorScore, audit: VectorAudit, null: Sequence[float],
                             positive: Sequence[float], thresholds: VerdictThresholds) -> str:
    if score.realism < audit.min_realism:
        return "not natural"
    verdicts = [judge_direction(max(v, 0.0), null, positive, thresholds).verdict
                for v in (score.selection_recovery, score.recovery)]
    if "inconclusive" in verdicts:
        return "inconclusive"
    weakest = min(verdicts, key=lambda v: _RANK.get(v, 0))
    axis = audit.behavior
    if axis is None or axis.generic is None:
        return weakest
    both = (axis.specific(score), axis.specific(score, selection=True))  # the prompt must pass on both sets
    return generically(weakest, min(both) if all(v is not None and v == v for v in both) else math.nan,  # type: ignore[type-var]
                       thresholds)


def judge_one(audit: VectorAudit, nulls: Sequence[VectorAudit], positives: Sequence[VectorAudit],
              thresholds: VerdictThresholds, *, axis: Axis = "activation", seed: int = 0,
              n_resamples: int = 200) -> Judgement:
    """The verdict of one item on `axis` from its evidence and its controls' evidence."""
    usable_null = [a for a in nulls if a.axis_value(axis) is not None]
    usable_pos = [a for a in positives if a.axis_value(axis) is not None]
    null_values = [a.axis_value(axis) for a in usable_null]
    pos_values = [a.axis_value(axis) for a in usable_pos]
    behavior = audit.behavior if axis == "behavior" else None
    inert = behavior is not None and behavior.inert
    specific = None if behavior is None or behavior.best is None else behavior.specific(behavior.best)

    def decide(value: float | None, null: list[float], pos: list[float]) -> tuple[str, float | None]:
        if inert:
            return "inconclusive", None
        direction = judge_direction(value, null, pos, thresholds)
        score = direction.calibration.score if direction.calibration is not None else None
        if axis == "activation":
            return combine(direction.verdict, audit.magnitude, thresholds), score
        return generically(direction.verdict, specific, thresholds), score

    direction = judge_direction(audit.axis_value(axis), null_values, pos_values, thresholds)  # type: ignore[arg-type]
    verdict, _ = decide(audit.axis_value(axis), null_values, pos_values)  # type: ignore[arg-type]
    stability = joint_bootstrap(
        _evidence(audit, axis), [e for a in usable_null if (e := _evidence(a, axis)) is not None],
        [e for a in usable_pos if (e := _evidence(a, axis)) is not None], decide, n_resamples=n_resamples, seed=seed,
    )
    reason = direction.reason.replace("specific cos", "recovery") if axis == "behavior" else direction.reason
    if inert:
        reason = (f"the vector barely changes the outputs ({behavior.effect:.3f} nats/token of KL steered || base):"  # type: ignore[union-attr]
                  " there is no behavior to reproduce")
    elif axis == "activation" and direction.verdict in ("realizable", "partially realizable"):
        reason += "; " + magnitude_note(audit.magnitude, thresholds)
    elif verdict == "generically realizable":
        generic = behavior.generic  # type: ignore[union-attr]
        reason += (f"; an unrelated instruction recovers {generic.recovery:.2f} (\"{generic.prompt}\"): the best "  # type: ignore[union-attr]
                   f"prompt closes only {specific:.2f} of what it leaves (specific recovery < "
                   f"{thresholds.generic_specific:g})")
    elif behavior is not None and behavior.best is not None and verdict not in ("realizable",):
        best = behavior.best
        if best.direction_cos >= 0.5 and best.effect_ratio > 1.5:
            reason += (f"; the best prompt pushes the same tokens (direction cos {best.direction_cos:.2f}) "
                       f"{best.effect_ratio:.1f}x harder: same behavior, stronger")
    if axis == "activation":
        prompt_verdicts = tuple(prompt_verdict(p, audit, null_values, pos_values, thresholds)  # type: ignore[arg-type]
                                for p in audit.frontier)
    else:
        prompt_verdicts = tuple(
            "inconclusive" if inert else _behavior_prompt_verdict(p, audit, null_values, pos_values, thresholds)  # type: ignore[arg-type]
            for p in (behavior.frontier if behavior is not None else ()))
    return Judgement(
        verdict=verdict, direction=direction.verdict if not inert else "inconclusive", reason=reason,  # type: ignore[arg-type]
        calibration=None if inert else direction.calibration, stability=stability.share_same,
        score_interval=stability.score_interval, value_interval=stability.value_interval,
        prompt_verdicts=prompt_verdicts,
        controls={"null": tuple(a.vector_id for a in usable_null), "positive": tuple(a.vector_id for a in usable_pos)},
    )


def judge_all(audits: Sequence[VectorAudit], thresholds: VerdictThresholds, *, seed: int = 0) -> list[JudgedAudit]:
    """Verdicts for every item on each of its axes, in order, each against the controls of its layer."""
    by_layers: dict[tuple[int, ...], list[VectorAudit]] = {}
    for audit in audits:
        by_layers.setdefault(audit.layers, []).append(audit)
    judged = []
    for audit in audits:
        verdicts: dict[str, Judgement] = {}
        for axis in audit.axes:
            nulls, positives = controls_for(audit, by_layers[audit.layers], axis)
            verdicts[axis] = judge_one(audit, nulls, positives, thresholds, axis=axis, seed=seed)
        judged.append(JudgedAudit(audit, verdicts.get("activation"), verdicts.get("behavior")))
    return judged
