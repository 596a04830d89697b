"""The rules of the calibrated verdict, applied to statistics computed beforehand (`realize.stats`).

    judge_axis(point, resamples, prompts, band, thresholds) -> AxisDecision   # the one entry
    decide(case, thresholds) -> Decision      # the rule chain: direction, then content, then magnitude

`realize.judging` gathers an item's numbers (`AxisInputs`) and its controls', has them resampled
(`realize.resampling`) and their statistics computed (`realize.stats.axis_case`, one `AxisCase` for the point and
one per resample), and calls `judge_axis` once; `realize.reasons` words the outcome.

Every target (a vector, or a control) gets the same search; its best prompt is *chosen* on selection contexts and
*measured* on test contexts. Its value x (activation: specific cosine; behavior: pooled recovery) is placed between

- nulls: random directions of the layer's natural shift space, matched to the vector (values n_i);
- positives: held-out natural prompts' steers, for which a prompt exists (values p_j).

Direction verdict (thresholds in `VerdictThresholds`):

    no natural candidate   no prompt passed the realism threshold (not a measured 0)
    inconclusive           fewer than `min_controls` usable nulls or positives; nulls with zero spread (no
                           prediction bound exists); or positives not `separation_sd` pooled sd above the nulls
    realizable             x >= U(realizable_alpha) and score >= realizable_score
    partially realizable   x >= U(partial_alpha) and score >= partial_score
    not realizable         otherwise

with score = (x - mean(n)) / (mean(p) - mean(n)) clipped to [0, 1], and U(alpha) = mean(n) + t_{1-alpha, n-1} *
sd(n) * sqrt(1 + 1/n), the one-sided prediction bound for one more null. No value is floored: a control below 0 is
a measurement, and a floor would shrink the nulls' spread and the bound with it.

Content (a (partially) realizable direction must survive "would a prompt of the same form with other content, or
an unrelated instruction, do as well?"):

    generic    the best of a panel of unrelated instructions itself clears the null bound U(partial_alpha), and
               x - g lies within its paired bootstrap spread                    -> "generically realizable"
    form       the best prompt beats its form siblings (same template, content words swapped) by less than
               `content_fraction` of the margin the positives' own prompts show over theirs (or no such margin can
               be calibrated, or the prompt has no content word to swap)        -> "form realizable"
               `content_reference`: the margin is over the siblings' mean ("mean") or over the nearest sibling
               ("nearest": every sibling must be beaten), for the best prompt and the positives' alike
               `content_level` (default 0.95; None: off): the margin must also exceed its one-sided bootstrap
               spread at that level (margin - spread > 0: the prompt beats its siblings by more than resampling
               the test contexts moves the margin)                               -> otherwise "form realizable"
               `content_cosine` (activation; default off): the content cosine cos(e_0 - s, u - s) (e_0 the prompt's
               unit mean shift, s its siblings' mean, u the steer's; `realize.resampling.FormEvidence`) must also
               reach `content_fraction` of the positives' own prompts' median          -> otherwise "form realizable"
    specific   otherwise: what the prompt says matters                          -> the direction verdict

Magnitude (activation; `realize.magnitude`): "realizable" becomes "direction realizable" (and "partially
realizable" "direction partially realizable") when a > magnitude_factor * a*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from realize.data.resample import percentile_interval
from realize.stats import CONTENT_REFERENCES, AxisCase, Calibration, ContentReference, Placed

DirectionVerdict = Literal["realizable", "partially realizable", "not realizable", "inconclusive",
                           "no natural candidate"]
Content = Literal["specific", "form", "generic"]
Verdict = Literal["realizable", "partially realizable", "direction realizable", "direction partially realizable",
                  "form realizable", "generically realizable", "not realizable", "inconclusive",
                  "no natural candidate"]
VERDICTS: tuple[Verdict, ...] = ("realizable", "partially realizable", "direction realizable",
                                 "direction partially realizable", "form realizable", "generically realizable",
                                 "not realizable", "inconclusive", "no natural candidate")
PASSING: tuple[DirectionVerdict, ...] = ("realizable", "partially realizable")


@dataclass(frozen=True, kw_only=True)
class VerdictThresholds:
    realizable_score: float = 0.7  # score (0 = null mean, 1 = positive mean) needed for "realizable"
    partial_score: float = 0.35  # score needed for "partially realizable"
    realizable_alpha: float = 0.01  # x must reach the null's one-sided (1 - alpha) prediction bound
    partial_alpha: float = 0.05  # the same for "partially realizable"
    separation_sd: float = 3.0  # positives must beat nulls by this many pooled sd, else "inconclusive"
    min_controls: int = 3  # fewer usable nulls or positives than this: "inconclusive"
    magnitude_factor: float = 1.5  # c: beyond natural when a > c * a*
    min_realism: float | None = None  # realism a prompt needs to count as natural; None = the classifier's threshold
    content_fraction: float = 0.5  # form test: share of the positives' own content margin the prompt must reach
    content_reference: ContentReference = "mean"  # form test: margin over the siblings' "mean" or the "nearest" one
    generic_level: float = 0.95  # generic test: one-sided level of the paired bootstrap spread of x - g
    content_level: float | None = 0.95  # form test: one-sided level at which the margin must exceed 0 (None: off)
    content_cosine: bool = False  # form test (activation): the content cosine must also reach content_fraction of
    # the positives' median content cosine (`realize.resampling.FormEvidence`)

    def __post_init__(self) -> None:
        for name in ("realizable_score", "partial_score", "content_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {value}")
        if self.min_realism is not None and not 0.0 <= self.min_realism <= 1.0:
            raise ValueError(f"min_realism: expected a value in [0, 1] or None, got {self.min_realism}")
        if self.partial_score > self.realizable_score:
            raise ValueError("partial_score: expected <= realizable_score")
        for name in ("realizable_alpha", "partial_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name}: expected a probability in (0, 0.5), got {value}")
        if self.realizable_alpha > self.partial_alpha:
            raise ValueError("realizable_alpha: expected <= partial_alpha (realizable is the stricter test)")
        if self.content_reference not in CONTENT_REFERENCES:
            raise ValueError(f"content_reference: expected one of {', '.join(CONTENT_REFERENCES)}, got "
                             f"{self.content_reference!r}")
        if not 0.5 <= self.generic_level < 1.0:
            raise ValueError(f"generic_level: expected a level in [0.5, 1), got {self.generic_level}")
        if self.content_level is not None and not 0.5 <= self.content_level < 1.0:
            raise ValueError(f"content_level: expected a level in [0.5, 1) or None, got {self.content_level}")
        if self.separation_sd < 0:
            raise ValueError(f"separation_sd: expected >= 0, got {self.separation_sd}")
        if self.min_controls < 2:
            raise ValueError(f"min_controls: expected >= 2 (a prediction bound needs a spread), got "
                             f"{self.min_controls}")
        if self.magnitude_factor < 1.0:
            raise ValueError(f"magnitude_factor: expected >= 1, got {self.magnitude_factor}")


@dataclass(frozen=True)
class DirectionJudgement:
    verdict: DirectionVerdict
    calibration: Calibration | None
    reason: str  # one sentence a user can act on


def judge_direction(placed: Placed, thresholds: VerdictThresholds, *, what: str = "value") -> DirectionJudgement:
    """The direction verdict of one value among its controls (see module docstring); `what` names the value in
    the reason ("specific cos", "recovery")."""
    value, null, positive = placed.value, placed.null, placed.positive
    if value is None or not math.isfinite(value):
        return DirectionJudgement("no natural candidate", None, "no searched prompt passed the realism threshold")
    need = thresholds.min_controls
    if len(null) < need or len(positive) < need or placed.calibration is None:
        return DirectionJudgement("inconclusive", None, f"only {len(null)} usable null and {len(positive)} positive "
                                  f"controls (at least {need} of each are needed)")
    cal = placed.calibration
    if cal.null_sd <= 1e-12:
        return DirectionJudgement("inconclusive", None, f"the {len(null)} nulls all have the same {what} "
                                  f"({null[0]:.3g}): with zero spread no prediction bound exists")
    if not cal.separation >= thresholds.separation_sd:
        return DirectionJudgement("inconclusive", cal, f"the positive controls (mean {cal.positive_mean:.2f}) do not "
                                  f"beat the nulls (mean {cal.null_mean:.2f}) by {thresholds.separation_sd:g} pooled "
                                  f"sd (only {cal.separation:.1f}): the search cannot tell them apart here")
    if value >= cal.realizable_bound and cal.score >= thresholds.realizable_score:
        return DirectionJudgement("realizable", cal, f"{what} {value:.2f} is above the null's "
                                  f"{100 * (1 - thresholds.realizable_alpha):g}% prediction bound "
                                  f"{cal.realizable_bound:.2f} and at {cal.score:.2f} of the way to the positives")
    if value >= cal.partial_bound and cal.score >= thresholds.partial_score:
        return DirectionJudgement("partially realizable", cal, f"{what} {value:.2f} is above the null's "
                                  f"{100 * (1 - thresholds.partial_alpha):g}% prediction bound {cal.partial_bound:.2f} "
                                  f"but only {cal.score:.2f} of the way to the positives")
    return DirectionJudgement("not realizable", cal, f"{what} {value:.2f} against null bound "
                              f"{cal.partial_bound:.2f} and positives {cal.positive_mean:.2f} (score {cal.score:.2f})")


def is_generic(value: float, unrelated: float | None, bound: float, spread: float) -> bool:
    """The generic test: an unrelated instruction's value itself clears the null bound and the prompt's value is
    within the paired bootstrap spread of it (None or nan: no panel, not generic)."""
    if unrelated is None or not math.isfinite(unrelated) or not math.isfinite(spread):
        return False
    return unrelated >= bound and value - unrelated <= spread


def content_passes(margin: float | None, true_margin: float | None, thresholds: VerdictThresholds,
                   spread: float = math.nan, cosine: float | None = None, true_cosine: float | None = None) -> bool:
    """The form test: the prompt beats its form siblings by at least `content_fraction` of the margin the true
    prompts of the positives show over theirs, and (with `content_level`) by more than the margin's one-sided
    bootstrap `spread`. No margin (no content word to swap), no calibration (no positive margin, or a margin <= 0:
    content cannot be told apart from form here) or, with `content_level`, no spread fails. With `content_cosine`
    the prompt's content `cosine` must also reach `content_fraction` of the positives' median `true_cosine`; no
    cosine or no calibration (a median <= 0) fails."""
    if margin is None or true_margin is None or not math.isfinite(margin) or not true_margin > 0:
        return False
    if thresholds.content_level is not None and not (math.isfinite(spread) and margin - spread > 0):
        return False
    if thresholds.content_cosine and not cosine_passes(cosine, true_cosine, thresholds.content_fraction):
        return False
    return margin >= thresholds.content_fraction * true_margin


def cosine_passes(cosine: float | None, true_cosine: float | None, fraction: float) -> bool:
    """The content cosine reaches `fraction` of its calibration (the positives' median; it must be > 0)."""
    if cosine is None or true_cosine is None or not math.isfinite(cosine) or not true_cosine > 0:
        return False
    return cosine >= fraction * true_cosine


def qualify(direction: DirectionVerdict, content: Content | None, beyond_magnitude: bool) -> Verdict:
    """The headline verdict: a passing direction qualified by content (generic before form) and by magnitude."""
    if direction not in PASSING:
        return direction
    if content == "generic":
        return "generically realizable"
    if content == "form":
        return "form realizable"
    if beyond_magnitude:
        return "direction realizable" if direction == "realizable" else "direction partially realizable"
    return direction


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    direction: DirectionJudgement
    content: Content | None
    content_margin: float | None  # the best prompt's margin over its form siblings (`content_reference`)


def content_outcome(case: AxisCase, direction: DirectionJudgement, thresholds: VerdictThresholds) -> Content | None:
    """The content outcome of a passing direction (None otherwise): generic (the unrelated instruction) before form
    (the siblings)."""
    inputs = case.inputs
    if direction.verdict not in PASSING or direction.calibration is None or inputs.value is None:
        return None
    if is_generic(inputs.value, inputs.unrelated, direction.calibration.partial_bound, inputs.spread):
        return "generic"
    passes = content_passes(case.margin, inputs.true_margin, thresholds, inputs.margin_spread, inputs.content_cosine,
                            inputs.true_cosine)
    return "specific" if passes else "form"


def decide(case: AxisCase, thresholds: VerdictThresholds) -> Decision:
    """The whole rule chain for one item on one axis: direction, then content, then magnitude (`qualify`)."""
    if case.inputs.inert:
        return Decision("inconclusive", DirectionJudgement("inconclusive", None, "inert"), None, None)
    direction = judge_direction(case.direction, thresholds, what=case.inputs.what)
    content = content_outcome(case, direction, thresholds)
    return Decision(qualify(direction.verdict, content, case.inputs.beyond_magnitude), direction, content,
                    case.margin)


@dataclass(frozen=True)
class PromptInputs:
    """One frontier prompt, judged on its *selection* value (a prompt kept in a dataset is never chosen on the
    test numbers it reports)."""

    realism: float
    selection: float


@dataclass(frozen=True)
class RealismBand:
    """Where a prompt counts as natural: below `unnatural_below` not natural, from there to `min_realism` +
    `export_margin` unverified (the judge cannot tell, or too close to the threshold to keep)."""

    unnatural_below: float
    min_realism: float
    export_margin: float


def prompt_verdict(prompt: PromptInputs, placed: Placed, content: Content | None, beyond_magnitude: bool,
                   band: RealismBand, thresholds: VerdictThresholds) -> str:
    """The verdict one prompt earns on its selection value among the controls' selection values (`placed`),
    qualified by its item's content outcome and magnitude; "not natural" / "unverified" by its realism band."""
    if prompt.realism < band.unnatural_below:
        return "not natural"
    if prompt.realism < band.min_realism + band.export_margin:
        return "unverified"
    direction = judge_direction(placed, thresholds).verdict
    return qualify(direction, content if direction in PASSING else None, beyond_magnitude)


@dataclass(frozen=True)
class Stability:
    share_same: float  # share of resamples whose verdict equals the point verdict
    score_interval: tuple[float, float] | None  # percentile interval of the score (None: no calibration)
    value_interval: tuple[float, float] | None  # percentile interval of the item's value


@dataclass(frozen=True)
class AxisDecision:
    """An item's decided verdict on one axis, its stability under resampling, and each frontier prompt's verdict."""

    decision: Decision
    stability: Stability
    prompt_verdicts: tuple[str, ...]


def judge_axis(point: AxisCase, resamples: Sequence[AxisCase], prompts: Sequence[tuple[PromptInputs, Placed]],
               band: RealismBand, thresholds: VerdictThresholds, *, level: float = 0.9) -> AxisDecision:
    """Decide one item on one axis: the point verdict; its stability, the same rules re-run on every joint resample
    of the test contexts (`resamples`; none: no evidence to resample, stable by definition); and each frontier
    prompt's verdict on its selection value among the controls' selection values."""
    decision = decide(point, thresholds)
    verdicts = tuple("inconclusive" if point.inputs.inert else prompt_verdict(
        prompt, placed, decision.content, point.inputs.beyond_magnitude, band, thresholds)
        for prompt, placed in prompts)
    if not resamples:
        return AxisDecision(decision, Stability(1.0, None, None), verdicts)
    redecided = [decide(case, thresholds) for case in resamples]
    scores = [d.direction.calibration.score for d in redecided if d.direction.calibration is not None]
    values = [v for case in resamples if (v := case.inputs.value) is not None and math.isfinite(v)]
    share = sum(d.verdict == decision.verdict for d in redecided) / len(redecided)
    stability = Stability(share, percentile_interval(scores, level), percentile_interval(values, level))
    return AxisDecision(decision, stability, verdicts)
