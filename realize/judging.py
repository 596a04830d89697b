"""Turn the evidence of every item of an audit into verdicts, one code path for every axis, each item against the
controls of the same layer(s).

- Controls: the nulls of the item's layers and nearest norm bin, and the positives of the axis (held-out prompts'
  shifts on the activation axis, steers distilled from them on the behavior axis), itself left out (controls are
  judged leave-one-out). A control without a natural-enough prompt, or one that barely changes the outputs (behavior
  axis: inert), is not usable: it can make a verdict "inconclusive" but never counts as a measured value.
- Direction, content and magnitude rules: `realize.verdict`. The form test compares prompts in the content metric
  (activation: the whitened cosine, `realize.setting.whitening`; behavior: the recovery); its calibration is the
  median margin by which the positives' own held-out prompts beat their form siblings (mean or nearest,
  `VerdictThresholds.content_reference`) on this axis (`own_margin`). With `content_level` the best prompt's margin
  must also exceed its one-sided bootstrap spread, taken on the same joint resamples as the stability. With
  `content_cosine` (activation) the best prompt's content cosine against its siblings must also reach
  `content_fraction` of the positives' own prompts' median (`true_cosine`), resampled with everything else.
- Stability: `resampled_values` resamples the test contexts jointly for the item, its controls, its siblings and
  its unrelated instruction; the whole verdict is recomputed on each resample.
- One pass per item and axis: its numbers are gathered here, then resampled (`realize.resampling`), then their
  statistics computed (`realize.stats`), then the rules applied once (`realize.verdict.judge_axis`), then worded
  (`realize.reasons.explain`).
- Prompts the user suspects (`AuditConfig.hypotheses`) are each judged as if they were the best prompt, by the same
  rules against the same controls. They were not chosen on the data, so their test values carry no selection bias
  (the controls' best prompts were chosen by a search: the comparison is conservative for the suspected prompt).
- Each frontier prompt also gets its own verdict, decided on its *selection* value against the controls' selection
  values (so a prompt kept in a dataset is never chosen on the test numbers it reports), with a realism margin.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import replace

from realize.evidence import (POSITIVE_KIND, Axis, AxisEvidence, ContentTest, Judgement, JudgedAudit, Measured,
                              VectorAudit)
from realize.reasons import explain
from realize.resampling import Evidence, paired_spread, resampled_values
from realize.stats import (AxisInputs, ContentReference, axis_case, margin_spread, median_margin, place,
                           sibling_margin)
from realize.targets import norm_bin
from realize.verdict import PromptInputs, RealismBand, VerdictThresholds, judge_axis

EXPORT_REALISM_MARGIN = 0.1  # a prompt kept in a dataset must pass the realism threshold by this much
WHAT: dict[Axis, str] = {"activation": "specific cos", "behavior": "recovery"}


def bins(audit: VectorAudit) -> tuple[int, ...]:
    """The norm bin of the audited steer at each of its layers."""
    return tuple(norm_bin(n) for n in audit.layer_norms)


def planned_bins(null: VectorAudit) -> tuple[int, ...]:
    """The norm bins a null was planned for: its direction's norm |v_i| at each layer, before a behavior null's
    rescaling to its effect bin (its audited |a v_i| then lands anywhere; activation nulls have a = 1)."""
    return tuple(norm_bin(n / null.scale) for n in null.layer_norms)


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
    nulls of the nearest planned norm bins (`planned_bins`), on the behavior axis among those of the nearest effect
    bin; behavior positives of the nearest effect bin. The plan makes every vector's own (norm bins, effect bin)
    nulls, so a vector is judged against the same nulls whatever else its batch holds (pooling every norm bin of
    an effect bin made a vector's verdict depend on the other vectors of its batch)."""
    nulls = [a for a in pool if a.kind == "null" and axis in a.axes and a.layers == audit.layers]
    positives = [a for a in pool if a.kind == POSITIVE_KIND[axis] and a.layers == audit.layers]
    if axis == "behavior":
        nulls = _nearest(nulls, _effect_bin, _effect_bin(audit))
        positives = _nearest(positives, _effect_bin, _effect_bin(audit))
    nulls = _nearest(nulls, planned_bins, planned_bins(audit) if audit.kind == "null" else bins(audit))
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


def _own_prompt(audit: VectorAudit, axis: Axis) -> tuple[float, tuple[float, ...]] | None:
    """A positive's own held-out prompt and its form siblings, in the content test's metric (None: not measured)."""
    evidence = audit.axes[axis]
    if evidence.true_prompt is None:
        return None
    return evidence.true_prompt.content.value(), tuple(s.content.value() for s in evidence.true_siblings)


def own_margin(audit: VectorAudit, axis: Axis, reference: ContentReference) -> float | None:
    """A positive's margin: its own held-out prompt over its form siblings (None: not measured)."""
    own = _own_prompt(audit, axis)
    return None if own is None else sibling_margin(*own, reference)


def true_cosine(positives: Sequence[VectorAudit], axis: Axis) -> float | None:
    """The content cosine's calibration: the median over the positives of their own held-out prompt's content cosine
    against its siblings (None: none measured, e.g. on the behavior axis)."""
    values = [v for a in positives if (form := a.axes[axis].true_form) is not None and math.isfinite(v := form.value())]
    return statistics.median(values) if values else None


def best_margin_spread(evidence: AxisEvidence, reference: ContentReference, level: float, *, seed: int = 0,
                       n_resamples: int = 200) -> float:
    """The one-sided bootstrap spread at `level` of the best prompt's margin over its form siblings (content
    metric), on the joint resamples of the test contexts that `judge_best` draws with the same seed (nan: no best
    prompt or no sibling)."""
    if evidence.best is None or not evidence.siblings:
        return math.nan
    siblings = [s.content for s in evidence.siblings]
    point = sibling_margin(evidence.best.content.value(), [s.value() for s in siblings], reference)
    table = resampled_values([siblings, [evidence.best.content]], n_resamples=n_resamples, seed=seed)
    return margin_spread(point, [sibling_margin(v[1][0], v[0], reference) for v in table], level)


def judge_one(audit: VectorAudit, nulls: Sequence[VectorAudit], positives: Sequence[VectorAudit],
              thresholds: VerdictThresholds, *, axis: Axis, seed: int = 0, n_resamples: int = 200) -> Judgement:
    """The verdict of one item on `axis` (`judge_best`), with each prompt the user suspects judged as if it were
    the best prompt: the same rules, the same controls."""
    evidence = audit.axes[axis]
    suspected = [replace(audit, axes={**audit.axes, axis: evidence.as_best(h, audit.min_realism)})
                 for h in evidence.hypotheses]
    judged = [judge_best(a, nulls, positives, thresholds, axis=axis, seed=seed, n_resamples=n_resamples)
              for a in (audit, *suspected)]
    return replace(judged[0], hypotheses=tuple(judged[1:]))


def judge_best(audit: VectorAudit, nulls: Sequence[VectorAudit], positives: Sequence[VectorAudit],
               thresholds: VerdictThresholds, *, axis: Axis, seed: int = 0, n_resamples: int = 200) -> Judgement:
    """The verdict of one item's best prompt on `axis` from its evidence and its usable controls' evidence: the
    numbers are gathered here, resampled, given their statistics, decided once by `realize.verdict.judge_axis`,
    and worded by `realize.reasons.explain`."""
    if axis != "activation":  # the content cosine is an activation test (a recovery has no direction)
        thresholds = replace(thresholds, content_cosine=False)
    evidence = audit.axes[axis]
    best, unrelated = evidence.best, evidence.unrelated
    null_best, positive_best = [_best(a, axis) for a in nulls], [_best(a, axis) for a in positives]
    own = [pair for a in positives if (pair := _own_prompt(a, axis)) is not None]
    groups: list[list[Evidence]] = [
        [best.evidence] if best is not None else [], [b.evidence for b in null_best],
        [b.evidence for b in positive_best], [s.content for s in evidence.siblings],
        [unrelated.evidence] if unrelated is not None else [], [best.content] if best is not None else []]
    form = evidence.form if thresholds.content_cosine and best is not None else None
    if form is not None:  # the content cosine, resampled with everything else
        groups.append([form])
    band = RealismBand(audit.unnatural_below if audit.unnatural_below is not None else audit.min_realism,
                       audit.min_realism, EXPORT_REALISM_MARGIN)
    match = None
    if axis == "behavior" and (null_match := effect_match(audit, nulls)) is not None:
        match = (null_match, effect_match(audit, positives))
    # resampled: the paired spread of x - g, and every value on every joint resample of the test contexts
    spread = math.nan
    if best is not None and unrelated is not None:
        spread = paired_spread(best.evidence, unrelated.evidence, level=thresholds.generic_level, seed=seed)
    table = resampled_values(groups, n_resamples=n_resamples, seed=seed)
    reference = thresholds.content_reference
    content_value = None if best is None else best.content.value()
    siblings = tuple(s.content.value() for s in evidence.siblings)
    spread_of_margin = math.nan  # the form test's margin spread (only with content_level)
    if thresholds.content_level is not None:
        spread_of_margin = best_margin_spread(evidence, reference, thresholds.content_level, seed=seed,
                                              n_resamples=n_resamples)
    # statistics, for the point and each resample, then the rules once
    alphas = {"realizable_alpha": thresholds.realizable_alpha, "partial_alpha": thresholds.partial_alpha}
    calibration = median_margin(own, reference)
    inputs = AxisInputs(
        value=evidence.value, null=tuple(b.score.value for b in null_best),
        positive=tuple(b.score.value for b in positive_best),
        content_value=content_value, siblings=siblings,
        unrelated=None if unrelated is None else unrelated.score.value, spread=spread,
        margin_spread=spread_of_margin, true_margin=calibration,
        beyond_magnitude=axis == "activation" and audit.magnitude.beyond(thresholds.magnitude_factor),
        inert=evidence.behavior is not None and evidence.behavior.inert, what=WHAT[axis],
        content_cosine=None if form is None else form.value(),
        true_cosine=true_cosine(positives, axis) if thresholds.content_cosine else None)
    point = axis_case(inputs, reference=reference, **alphas)
    resamples = [axis_case(inputs.resampled(values), reference=reference, **alphas) for values in table]
    null_sel, positive_sel = [b.score.selection for b in null_best], [b.score.selection for b in positive_best]
    prompts = [(PromptInputs(p.realism, p.selection), place(p.selection, null_sel, positive_sel, **alphas))
               for p in evidence.frontier]
    decided = judge_axis(point, resamples, prompts, band, thresholds)
    decision = decided.decision
    content = None if decision.content is None or best is None else ContentTest(
        outcome=decision.content, margin=decision.content_margin, true_margin=calibration,
        unrelated=inputs.unrelated, unrelated_spread=None if not math.isfinite(spread) else spread,
        cosine=inputs.content_cosine, true_cosine=inputs.true_cosine)
    return Judgement(
        verdict=decision.verdict, direction=decision.direction.verdict,
        reason=explain(audit, axis, decision.direction, content, thresholds, match, margin_spread=spread_of_margin),
        calibration=decision.direction.calibration, stability=decided.stability.share_same,
        score_interval=decided.stability.score_interval, value_interval=decided.stability.value_interval,
        content=content, prompt_verdicts=decided.prompt_verdicts,
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
