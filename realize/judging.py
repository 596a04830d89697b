"""Turn the evidence of every item of an audit into verdicts, one code path for every axis, each item against the
controls of the same layer(s).

- Controls: the nulls of the item's layers and nearest norm bin, and the positives of the axis (held-out prompts'
  shifts on the activation axis, steers distilled from them on the behavior axis), itself left out (controls are
  judged leave-one-out). A control without a natural-enough prompt, or one that barely changes the outputs (behavior
  axis: inert), is not usable: it can make a verdict "inconclusive" but never counts as a measured value.
- Direction, content and magnitude rules: `realize.verdict`. The form test compares prompts in the content metric
  (activation: the whitened cosine, `realize.setting.whitening`; behavior: the recovery); its calibration is the
  median margin by which the positives' own held-out prompts beat their form siblings on this axis
  (`AxisEvidence.true_margin`).
- Stability: `joint_bootstrap` resamples the test contexts jointly for the item, its controls, its siblings and its
  unrelated instruction, and recomputes the whole verdict.
- Each frontier prompt also gets its own verdict, decided on its *selection* value against the controls' selection
  values (so a prompt kept in a dataset is never chosen on the test numbers it reports), with a realism margin.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from realize.evidence import (
    POSITIVE_KIND, Axis, BehaviorScore, ContentTest, Judgement, JudgedAudit, Measured, Score, VectorAudit,
)
from realize.resampling import Evidence, joint_bootstrap, paired_spread
from realize.targets import norm_bin
from realize.verdict import (
    PASSING, Content, DirectionJudgement, VerdictThresholds, content_passes, is_generic, judge_direction, qualify,
)

EXPORT_REALISM_MARGIN = 0.1  # a prompt kept in a dataset must pass the realism threshold by this much
WHAT: dict[Axis, str] = {"activation": "specific cos", "behavior": "recovery"}


def bins(audit: VectorAudit) -> tuple[int, ...]:
    """The norm bin of the audited steer at each of its layers."""
    return tuple(norm_bin(n) for n in audit.layer_norms)


def _usable(audit: VectorAudit, axis: Axis) -> bool:
    evidence = audit.axes.get(axis)
    if evidence is None or evidence.value is None:
        return False
    return not (evidence.behavior is not None and evidence.behavior.inert)


def _nearest(items: Sequence[VectorAudit], key, want) -> list[VectorAudit]:  # noqa: ANN001
    """The items whose `key(item)` (a tuple of bins) is nearest `want` (L1 distance; ties by the bins)."""
    if not items:
        return []
    nearest = min({key(a) for a in items},
                  key=lambda b: (sum(abs(x - y) for x, y in zip(b, want, strict=True)), b))
    return [a for a in items if key(a) == nearest]


def _effect_bin(audit: VectorAudit) -> tuple[int, ...]:
    return (audit.effect_bin if audit.effect_bin is not None else 0,)


def controls_for(audit: VectorAudit, pool: Sequence[VectorAudit],
                 axis: Axis) -> tuple[list[VectorAudit], list[VectorAudit]]:
    """The usable (null, positive) controls that judge `audit` on `axis`, itself excluded: of the same layers;
    activation nulls of the nearest norm bins; behavior nulls and positives of the nearest effect bin (behavior
    nulls are rescaled to their bin's effect, so each lands at a norm of its own: norm bins do not select them)."""
    nulls = [a for a in pool if a.kind == "null" and axis in a.axes and a.layers == audit.layers]
    positives = [a for a in pool if a.kind == POSITIVE_KIND[axis] and a.layers == audit.layers]
    if axis == "behavior":
        nulls = _nearest(nulls, _effect_bin, _effect_bin(audit))
        positives = _nearest(positives, _effect_bin, _effect_bin(audit))
    else:
        nulls = _nearest(nulls, bins, bins(audit))
    return ([a for a in nulls if a.vector_id != audit.vector_id and _usable(a, axis)],
            [a for a in positives if a.vector_id != audit.vector_id and _usable(a, axis)])


def effect_match(audit: VectorAudit, controls: Sequence[VectorAudit]) -> tuple[float, float] | None:
    """The range of the controls' first-answer effects relative to the item's (None: not measured)."""
    if not audit.effect or not controls:
        return None
    ratios = [a.effect / audit.effect for a in controls if a.effect]
    return (min(ratios), max(ratios)) if ratios else None


def _best(audit: VectorAudit, axis: Axis) -> Measured:
    best = audit.axes[axis].best
    assert best is not None, "usable controls have a best prompt"
    return best


def true_margin(positives: Sequence[VectorAudit], axis: Axis) -> float | None:
    """The median margin by which the positives' own prompts beat their form siblings (None: none measured)."""
    margins = [m for a in positives if (m := a.axes[axis].true_margin) is not None]
    return statistics.median(margins) if margins else None


def _content(value: float, content_value: float, direction: DirectionJudgement, sibling_values: Sequence[float],
             unrelated: float | None, spread: float, calibration: float | None,
             thresholds: VerdictThresholds) -> Content | None:
    """The content outcome of a passing direction: `value` against the unrelated instruction (generic test), and
    `content_value` against the siblings' values in the content test's metric (form test)."""
    if direction.verdict not in PASSING or direction.calibration is None:
        return None
    if is_generic(value, unrelated, direction.calibration.partial_bound, spread):
        return "generic"
    finite = [v for v in sibling_values if math.isfinite(v)]
    margin = content_value - sum(finite) / len(finite) if finite else None
    return "specific" if content_passes(margin, calibration, thresholds) else "form"


def _reason(audit: VectorAudit, axis: Axis, direction: DirectionJudgement, content: ContentTest | None,
            thresholds: VerdictThresholds,
            match: tuple[tuple[float, float], tuple[float, float] | None] | None = None) -> str:
    evidence = audit.axes[axis]
    facts = evidence.behavior
    if direction.verdict == "no natural candidate":
        band = audit.unnatural_below
        unverified = sum(band is not None and band <= s.realism < audit.min_realism for s in evidence.frontier)
        return (f"no searched prompt passed the realism threshold {audit.min_realism:.3g}"
                + (f" ({unverified} of {len(evidence.frontier)} in the judge's unverified band: it cannot tell whether"
                   " they are natural)" if unverified else ""))
    if facts is not None and facts.inert:
        return (f"the steer barely changes the outputs ({facts.effect:.3f} nats/token of KL steered || base): there is"
                " no behavior to reproduce")
    parts = [direction.reason]
    if content is not None:
        if content.outcome == "generic":
            assert evidence.unrelated is not None
            parts.append(f"an unrelated instruction (\"{evidence.unrelated.score.prompt}\") reaches "
                         f"{content.unrelated:.2f}, itself above the null bound, and the best prompt is within the "
                         f"paired bootstrap spread of it ({content.unrelated_spread:.2f})")
        elif content.outcome == "form":
            siblings = "; ".join(f"\"{s.score.prompt}\"" for s in evidence.siblings[:2])
            if content.margin is None:
                parts.append("the prompt has no content word to swap: it is all form")
            elif content.true_margin is None or not content.true_margin > 0:
                parts.append(f"the content test cannot be calibrated here (the positives' own prompts beat their "
                             f"form siblings by {content.true_margin if content.true_margin is not None else 'nothing measured'})")
            else:
                parts.append(f"prompts of the same form with other content do nearly as well (e.g. {siblings}): the "
                             f"best prompt beats its form siblings by {content.margin:.2f}, less than "
                             f"{thresholds.content_fraction:g} of the {content.true_margin:.2f} that true prompts show")
        else:
            parts.append(f"what it says matters: it beats its form siblings by {content.margin:.2f} (true prompts: "
                         f"{content.true_margin:.2f})")
    if axis == "activation" and direction.verdict in PASSING:
        parts.append(audit.magnitude.note(thresholds.magnitude_factor))
    if match is not None:
        parts.append(f"controls effect-matched: nulls {match[0][0]:.2g}-{match[0][1]:.2g}x, positives "
                     f"{match[1][0]:.2g}-{match[1][1]:.2g}x the steer's first-answer effect" if match[1] else
                     f"controls effect-matched: nulls {match[0][0]:.2g}-{match[0][1]:.2g}x the steer's effect")
    best = evidence.best.score if evidence.best is not None else None
    if isinstance(best, BehaviorScore) and direction.verdict != "realizable":
        if best.direction_cos >= 0.5 and best.effect_ratio > 1.5:
            parts.append(f"the best prompt pushes the same tokens (direction cos {best.direction_cos:.2f}) "
                         f"{best.effect_ratio:.1f}x harder: same behavior, stronger")
    return "; ".join(parts)


def prompt_verdict(score: Score, audit: VectorAudit, axis: Axis, null: Sequence[float], positive: Sequence[float],
                   content: Content | None, thresholds: VerdictThresholds) -> str:
    """The verdict one prompt earns on its *selection* value against the controls' selection values (export is
    decided on numbers that report nothing), qualified by its item's content outcome and magnitude; "not natural"
    below the judge's unverified band, "unverified" in the band (the judge cannot tell) or within
    `EXPORT_REALISM_MARGIN` above the threshold."""
    below = audit.unnatural_below if audit.unnatural_below is not None else audit.min_realism
    if score.realism < below:
        return "not natural"
    if score.realism < audit.min_realism + EXPORT_REALISM_MARGIN:
        return "unverified"
    direction = judge_direction(score.selection, null, positive, thresholds).verdict
    beyond = axis == "activation" and audit.magnitude.beyond(thresholds.magnitude_factor)
    return qualify(direction, content if direction in PASSING else None, beyond)


def judge_one(audit: VectorAudit, nulls: Sequence[VectorAudit], positives: Sequence[VectorAudit],
              thresholds: VerdictThresholds, *, axis: Axis, seed: int = 0, n_resamples: int = 200) -> Judgement:
    """The verdict of one item on `axis` from its evidence and its usable controls' evidence."""
    evidence = audit.axes[axis]
    inert = evidence.behavior is not None and evidence.behavior.inert
    null_values = [_best(a, axis).score.value for a in nulls]
    pos_values = [_best(a, axis).score.value for a in positives]
    calibration = true_margin(positives, axis)
    best, unrelated = evidence.best, evidence.unrelated
    spread = math.nan
    if best is not None and unrelated is not None:
        spread = paired_spread(best.evidence, unrelated.evidence, level=thresholds.generic_level, seed=seed)
    beyond = axis == "activation" and audit.magnitude.beyond(thresholds.magnitude_factor)
    what = WHAT[axis]

    def decide(groups: Sequence[Sequence[float]]) -> tuple[str, float | None]:
        if inert:
            return "inconclusive", None
        value = groups[0][0] if groups[0] else None
        direction = judge_direction(value, list(groups[1]), list(groups[2]), thresholds, what=what)
        content = None if value is None else _content(value, groups[5][0], direction, groups[3],
                                                      groups[4][0] if groups[4] else None, spread, calibration,
                                                      thresholds)
        score = direction.calibration.score if direction.calibration is not None else None
        return qualify(direction.verdict, content, beyond), score

    groups: list[list[Evidence]] = [
        [best.evidence] if best is not None else [], [_best(a, axis).evidence for a in nulls],
        [_best(a, axis).evidence for a in positives], [s.content for s in evidence.siblings],
        [unrelated.evidence] if unrelated is not None else [], [best.content] if best is not None else []]
    stability = joint_bootstrap(groups, decide, n_resamples=n_resamples, seed=seed)
    value = evidence.value
    direction = judge_direction(value, null_values, pos_values, thresholds, what=what)
    if inert:
        direction = DirectionJudgement("inconclusive", None, "inert")
    outcome = None if value is None or best is None or inert else _content(
        value, best.content.value(), direction, [s.content.value() for s in evidence.siblings],
        None if unrelated is None else unrelated.score.value, spread, calibration, thresholds)
    content = None if outcome is None else ContentTest(
        outcome=outcome, margin=evidence.content_margin, true_margin=calibration,
        unrelated=None if unrelated is None else unrelated.score.value,
        unrelated_spread=None if not math.isfinite(spread) else spread)
    match = None
    if axis == "behavior" and (null_match := effect_match(audit, nulls)) is not None:
        match = (null_match, effect_match(audit, positives))
    null_sel = [_best(a, axis).score.selection for a in nulls]
    pos_sel = [_best(a, axis).score.selection for a in positives]
    return Judgement(
        verdict=qualify(direction.verdict, outcome, beyond), direction=direction.verdict,
        reason=_reason(audit, axis, direction, content, thresholds, match), calibration=direction.calibration,
        stability=stability.share_same, score_interval=stability.score_interval,
        value_interval=stability.value_interval, content=content,
        prompt_verdicts=tuple("inconclusive" if inert else prompt_verdict(p, audit, axis, null_sel, pos_sel, outcome,
                                                                          thresholds)
                              for p in evidence.frontier),
        controls={"null": tuple(a.vector_id for a in nulls), "positive": tuple(a.vector_id for a in positives)},
    )


def judge_all(audits: Sequence[VectorAudit], thresholds: VerdictThresholds, *, seed: int = 0) -> list[JudgedAudit]:
    """Verdicts for every item on each of its axes, in order, each against the controls of its layers."""
    by_layers: dict[tuple[int, ...], list[VectorAudit]] = {}
    for audit in audits:
        by_layers.setdefault(audit.layers, []).append(audit)
    judged = []
    for audit in audits:
        judgements = {}
        for axis in audit.axes:
            nulls, positives = controls_for(audit, by_layers[audit.layers], axis)
            judgements[axis] = judge_one(audit, nulls, positives, thresholds, axis=axis, seed=seed)
        judged.append(JudgedAudit(audit, judgements))
    return judged
