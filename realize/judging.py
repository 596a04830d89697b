"""Turn the evidence of every item of an audit into verdicts, using the controls of the same layer (and norm bin).

- A vector is judged against the natural-distribution nulls of its layer and norm bin and every positive of its
  layer. Isotropic nulls are a labelled reference and never decide.
- A control is judged leave-one-out (itself removed from its own group), so its verdict shows what the calibration
  says of a target whose answer is known; positives and isotropic nulls use the nulls of the nearest norm bin.
- Controls without a natural-enough prompt have no value: they are not usable, so they can make a verdict
  "inconclusive" but never count as a measured 0.
- `joint_bootstrap` resamples test contexts jointly for the item and its controls and recomputes the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

from realize.audit_types import Judgement, JudgedAudit, PromptScore, VectorAudit
from realize.targets import norm_bin
from realize.verdict import (
    DirectionJudgement,
    VerdictThresholds,
    combine,
    joint_bootstrap,
    judge_direction,
    magnitude_note,
)


def _nearest_bin_nulls(pool: Sequence[VectorAudit], norm: float) -> list[VectorAudit]:
    nulls = [a for a in pool if a.kind == "null"]
    if not nulls:
        return []
    want = norm_bin(norm)
    nearest = min({norm_bin(a.target_norm) for a in nulls}, key=lambda b: (abs(b - want), b))
    return [a for a in nulls if norm_bin(a.target_norm) == nearest]


def controls_for(audit: VectorAudit, pool: Sequence[VectorAudit]) -> tuple[list[VectorAudit], list[VectorAudit]]:
    """The (null, positive) controls that judge `audit`, itself excluded."""
    nulls = [a for a in _nearest_bin_nulls(pool, audit.target_norm) if a.vector_id != audit.vector_id]
    positives = [a for a in pool if a.kind == "positive" and a.vector_id != audit.vector_id]
    return nulls, positives


def judge_one(audit: VectorAudit, nulls: Sequence[VectorAudit], positives: Sequence[VectorAudit],
              thresholds: VerdictThresholds, *, seed: int = 0, n_resamples: int = 200) -> Judgement:
    """The verdict of one item from its evidence and its controls' evidence."""
    usable_null = [a for a in nulls if a.value is not None]
    usable_pos = [a for a in positives if a.value is not None]

    def decide(value: float | None, null: list[float], pos: list[float]) -> tuple[str, float | None]:
        direction = judge_direction(value, null, pos, thresholds)
        score = direction.calibration.score if direction.calibration is not None else None
        return combine(direction.verdict, audit.magnitude, thresholds), score

    direction: DirectionJudgement = judge_direction(
        audit.value, [a.value for a in usable_null], [a.value for a in usable_pos], thresholds)  # type: ignore[misc]
    verdict = combine(direction.verdict, audit.magnitude, thresholds)
    stability = joint_bootstrap(
        audit.evidence, [a.evidence for a in usable_null if a.evidence is not None],
        [a.evidence for a in usable_pos if a.evidence is not None], decide, n_resamples=n_resamples, seed=seed,
    )
    reason = direction.reason
    if direction.verdict in ("realizable", "partially realizable"):
        reason += "; " + magnitude_note(audit.magnitude, thresholds)
    null_values, pos_values = [a.value for a in usable_null], [a.value for a in usable_pos]
    return Judgement(
        verdict=verdict, direction=direction.verdict, reason=reason, calibration=direction.calibration,
        prompt_verdicts=tuple(prompt_verdict(p, audit, null_values, pos_values, thresholds)  # type: ignore[arg-type]
                              for p in audit.frontier),
        stability=stability.share_same, score_interval=stability.score_interval,
        value_interval=stability.value_interval,
        controls={"null": tuple(a.vector_id for a in usable_null), "positive": tuple(a.vector_id for a in usable_pos)},
    )


_RANK = {"realizable": 2, "partially realizable": 1}


def prompt_verdict(score: PromptScore, audit: VectorAudit, null: Sequence[float], positive: Sequence[float],
                   thresholds: VerdictThresholds) -> str:
    """The verdict one prompt earns on its own numbers: "not natural" below the realism threshold; else the weaker
    of the direction verdicts of its selection and its test specific cosine (it must pass on both, so keeping it
    in a dataset is not a choice made on the numbers it reports), combined with the magnitude."""
    if score.realism < audit.min_realism:
        return "not natural"
    verdicts = [judge_direction(v, null, positive, thresholds).verdict
                for v in (score.selection_specific_cos, score.specific_cos)]
    if "inconclusive" in verdicts:
        return "inconclusive"
    weakest = min(verdicts, key=lambda v: _RANK.get(v, 0))
    return combine(weakest, audit.magnitude, thresholds)


def judge_all(audits: Sequence[VectorAudit], thresholds: VerdictThresholds, *, seed: int = 0) -> list[JudgedAudit]:
    """Verdicts for every item, in order, each against the controls of its layer."""
    by_layer: dict[int, list[VectorAudit]] = {}
    for audit in audits:
        by_layer.setdefault(audit.layer, []).append(audit)
    judged = []
    for audit in audits:
        nulls, positives = controls_for(audit, by_layer[audit.layer])
        judged.append(JudgedAudit(audit, judge_one(audit, nulls, positives, thresholds, seed=seed)))
    return judged
