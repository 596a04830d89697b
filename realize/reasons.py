"""The reason text of a verdict: one sentence a user can act on, naming the numbers the rule compared (the
rules themselves are `realize.verdict`; this module only words their outcome)."""

from __future__ import annotations

import math

from realize.evidence import Axis, AxisEvidence, BehaviorScore, ContentTest, VectorAudit
from realize.verdict import PASSING, DirectionJudgement, VerdictThresholds


def explain(audit: VectorAudit, axis: Axis, direction: DirectionJudgement, content: ContentTest | None,
            thresholds: VerdictThresholds,
            match: tuple[tuple[float, float], tuple[float, float] | None] | None = None, *,
            margin_spread: float = math.nan) -> str:
    """Why `audit` got `direction` (and `content`) on `axis`; `match`: the effect-match ranges of the behavior
    nulls and positives relative to the steer's effect; `margin_spread`: the content margin's one-sided bootstrap
    spread (nan: the form test does not use one)."""
    evidence = audit.axes[axis]
    facts = evidence.behavior
    if direction.verdict == "no natural candidate":
        band = audit.unnatural_below
        if [s.attack for s in evidence.frontier] == ["hypothesis"]:  # a suspected prompt judged on its own
            realism = evidence.frontier[0].realism
            where = ("in the judge's unverified band: it cannot tell whether it is natural"
                     if band is not None and realism >= band else "the judge calls it unnatural")
            return f"the prompt's realism {realism:.2f} is below the threshold {audit.min_realism:.3g} ({where})"
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
            elif content.margin >= thresholds.content_fraction * content.true_margin:  # its spread or the cosine
                if thresholds.content_level is None or content.margin - margin_spread > 0:
                    parts.append(_cosine_failed(content, thresholds.content_fraction))
                else:
                    parts.append(
                        f"prompts of the same form with other content may do as well (e.g. {siblings}): the "
                        f"best prompt beats its form siblings by {content.margin:.2f}, but resampling the test "
                        f"contexts moves that margin by {margin_spread:.2f} ({100 * (thresholds.content_level or 0):g}"
                        f"% one-sided): no larger than the noise")
            else:
                parts.append(f"prompts of the same form with other content do nearly as well (e.g. {siblings}): the "
                             f"best prompt beats its form siblings by {content.margin:.2f}, less than "
                             f"{thresholds.content_fraction:g} of the {content.true_margin:.2f} that true prompts show")
        else:
            spread = f"; its bootstrap spread {margin_spread:.2f}" if math.isfinite(margin_spread) else ""
            cosine = ("" if content.cosine is None or content.true_cosine is None else
                      f"; content cosine {content.cosine:.2f} (true prompts: {content.true_cosine:.2f})")
            parts.append(f"what it says matters: it beats its form siblings by {content.margin:.2f} (true prompts: "
                         f"{content.true_margin:.2f}{spread}{cosine})")
    if axis == "activation" and direction.verdict in PASSING:
        parts.append(audit.magnitude.note(thresholds.magnitude_factor))
    if match is not None:
        parts.append(f"controls effect-matched: nulls {match[0][0]:.2g}-{match[0][1]:.2g}x, positives "
                     f"{match[1][0]:.2g}-{match[1][1]:.2g}x the steer's first-answer effect" if match[1] else
                     f"controls effect-matched: nulls {match[0][0]:.2g}-{match[0][1]:.2g}x the steer's effect")
    best = evidence.best.score if evidence.best is not None else None
    if facts is not None and direction.verdict not in PASSING and (why := _no_prompt_helps(evidence, facts.effect)):
        parts.append(why)
    if isinstance(best, BehaviorScore) and direction.verdict != "realizable":
        if best.direction_cos >= 0.5 and best.effect_ratio > 1.5:
            parts.append(f"the best prompt pushes the same tokens (direction cos {best.direction_cos:.2f}) "
                         f"{best.effect_ratio:.1f}x harder: same behavior, stronger")
    return "; ".join(parts)


def _no_prompt_helps(evidence: AxisEvidence, effect: float) -> str | None:
    """Behavior: when every prompt measured (frontier, siblings, unrelated instruction) makes the steered text less
    likely than no prompt, say so with the numbers that show why: the steer's own effect, and how far the most
    aligned prompt's change of the outputs points along the steer's (direction cos) and how hard (effect ratio)."""
    scores = [*evidence.frontier, *(s.score for s in evidence.siblings),
              *(() if evidence.unrelated is None else (evidence.unrelated.score,))]
    behavior = [s for s in scores if isinstance(s, BehaviorScore) and s.value == s.value]
    if not behavior or any(s.value >= 0 for s in behavior):
        return None
    aligned = max(behavior, key=lambda s: s.direction_cos)
    return (f"no prompt of the {len(behavior)} measured makes the steered text likelier than no prompt (best "
            f"{max(s.value for s in behavior):.2f}): the steer changes the outputs by {effect:.3f} nats/token, and "
            f"every prompt changes them more in other directions than along the steer's (most aligned: "
            f"\"{aligned.prompt}\", direction cos {aligned.direction_cos:.2f}, {aligned.effect_ratio:.2f}x the "
            f"steer's push along it)")


def _cosine_failed(content: ContentTest, fraction: float) -> str:
    """The reason when the margin passed and the content cosine did not (`VerdictThresholds.content_cosine`)."""
    if content.cosine is None or not math.isfinite(content.cosine):
        return "the content cosine could not be measured (no form sibling with a usable shift)"
    if content.true_cosine is None or not content.true_cosine > 0:
        return (f"the content cosine cannot be calibrated here (the positives' own prompts reach "
                f"{content.true_cosine if content.true_cosine is not None else 'nothing measured'})")
    return (f"what the prompt's words add to its form does not point where the steer departs from that form: content "
            f"cosine {content.cosine:.2f}, less than {fraction:g} of the {content.true_cosine:.2f} that true prompts "
            f"reach")
