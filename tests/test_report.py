"""Judging synthetic items (one code path for both axes: controls, content test, inert steers, prompt verdicts) and the
HTML report (self-contained, escaped, one section per item and axis)."""

from __future__ import annotations

import dataclasses

import pytest

from realize.evidence import (
    ActivationScore, AxisEvidence, BehaviorFacts, BehaviorScore, Generation, JudgedAudit, Measured, VectorAudit,
)
from realize.judging import judge_all, judge_one
from realize.magnitude import NaturalNorms, magnitude
from realize.report import render_report, write_report
import torch

from realize.resampling import ContextEvidence, FormEvidence, RatioEvidence, specific_metric
from realize.verdict import VerdictThresholds

NATURAL = NaturalNorms.of([4.0 + 0.02 * i for i in range(50)])
K = 4  # test contexts


def _constant(value: float, axis: str):
    """Evidence whose value is `value` under every resample."""
    if axis == "activation":
        return ContextEvidence((value,) * K, ((1.0,) * K,) * K)
    return RatioEvidence((1.0 - value,) * K, (1.0,) * K)


def _score(prompt: str, value: float, axis: str = "activation", attack: str = "natural", selection: float | None = None,
           realism: float = 0.9):
    selection = value if selection is None else selection
    if axis == "activation":
        return ActivationScore(prompt, (1, 2), attack, selection, value, value + 0.2, value - 0.3, 1.0, 0.5, 40.0,
                               90.0, realism, (value,) * K)
    return BehaviorScore(prompt, (1, 2), attack, selection, value, (value,) * K, 0.2, 0.3, 0.8, 1.2, 40.0, 90.0,
                         realism)


def _measured(prompt: str, value: float, axis: str, attack: str = "natural") -> Measured:
    return Measured(_score(prompt, value, axis, attack), _constant(value, axis))


def axis_evidence(axis: str, value: float | None, *, siblings: tuple[float, ...] = (0.2, 0.25),
                  unrelated: float | None = 0.1, true: tuple[float, tuple[float, ...]] | None = None,
                  effect: float = 0.5) -> AxisEvidence:
    best = None if value is None else _measured("Explain simply.", value, axis)
    facts = None
    if axis == "behavior":
        facts = BehaviorFacts(effect=effect, inert=effect < 0.01, steer_norm=5.0,
                              generations=(Generation("Hi?", "steered <b>text</b>", "prompted", "base"),),
                              activation_prompt=_score("Explain simply.", 0.2, "behavior", "activation best"))
    return AxisEvidence(
        axis=axis,  # type: ignore[arg-type]
        frontier=(_score("<script>alert(1)</script>", 0.7, axis, realism=0.1),
                  *(() if best is None else (best.score,)), _score("You are a pirate.", 0.5, axis, "retrieval")),
        best=best, best_corpus=_score("You are a pirate.", 0.5, axis, "retrieval"), best_search_alone=None,
        siblings=tuple(_measured(f"Explain sibling {i}.", v, axis, "sibling") for i, v in enumerate(siblings)),
        unrelated=None if unrelated is None else _measured("Use simple words.", unrelated, axis, "unrelated panel"),
        true_prompt=None if true is None else _measured("The true prompt.", true[0], axis, "true prompt"),
        true_siblings=() if true is None else tuple(_measured(f"A true sibling {i}.", v, axis, "sibling")
                                                    for i, v in enumerate(true[1])),
        behavior=facts,
    )


def item(name: str, kind: str = "vector", *, activation: AxisEvidence | None = None,
         behavior: AxisEvidence | None = None, norm: float = 5.0) -> VectorAudit:
    axes = {a: e for a, e in (("activation", activation), ("behavior", behavior)) if e is not None}
    return VectorAudit(vector_id=f"id-{name}", name=name, source="v.safetensors", kind=kind, layers=(12,),  # type: ignore[arg-type]
                       layer_norms=(norm,), scale=1.0, method="melbo", target_norm=norm,
                       magnitude=magnitude(norm, 1.0, NATURAL, 0.5), min_realism=0.6, unnatural_below=0.2,
                       axes=axes,  # type: ignore[arg-type]
                       manifold={"share90": 0.4}, strength=(0.04,), seconds=12.0)


TRUE = (0.9, (0.7, 0.72))  # positives' own prompts beat their form siblings by ~0.19


def controls(norm: float = 5.0) -> list[VectorAudit]:
    nulls = [item(f"null{i}", "null", norm=norm, activation=axis_evidence("activation", v),
                  behavior=axis_evidence("behavior", r))
             for i, (v, r) in enumerate(((0.05, -0.8), (0.1, -0.6), (0.0, -1.2), (0.07, -0.9)))]
    positives = [item(f"pos{i}", "positive", activation=axis_evidence("activation", v, true=TRUE))
                 for i, v in enumerate((0.8, 0.9, 0.85))]
    behavior = [item(f"bpos{i}", "behavior-positive", behavior=axis_evidence("behavior", r, true=TRUE))
                for i, r in enumerate((0.6, 0.7, 0.65))]
    return nulls + positives + behavior


def judged(value: float | None, recovery: float | None = 0.6, norm: float = 5.0, **kwargs) -> JudgedAudit:
    audit = item("v", activation=axis_evidence("activation", value, **kwargs),
                 behavior=axis_evidence("behavior", recovery, **kwargs), norm=norm)
    return judge_all([audit, *controls(norm)], VerdictThresholds())[0]


def test_direction_and_magnitude():
    assert judged(0.85).verdict == "realizable"
    assert judged(0.02).verdict == "not realizable"
    none = judged(None)
    assert none.verdict == "no natural candidate"
    assert "unverified band" not in none.judgement("activation").reason  # its one unnatural prompt is at 0.1
    big = judged(0.85, norm=50.0)
    assert big.verdict == "direction realizable" and "beyond natural" in big.judgement("activation").reason
    within = judged(0.85).judgement("activation").reason
    assert "within natural" in within and "beyond" not in within


def test_form_siblings_that_do_as_well_make_it_form_realizable():
    """The content test: siblings at 0.8 of a best prompt at 0.85 (margin 0.05 < half of the positives' 0.19)."""
    form = judged(0.85, siblings=(0.8, 0.82)).judgement("activation")
    assert form.verdict == "form realizable" and form.content.outcome == "form"
    assert "same form with other content" in form.reason and "Explain sibling" in form.reason
    assert form.content.true_margin == pytest.approx(0.19)
    specific = judged(0.85, siblings=(0.6, 0.65)).judgement("activation")  # margin 0.225 >= 0.095
    assert specific.verdict == "realizable" and specific.content.outcome == "specific"
    assert judged(0.85, siblings=()).verdict == "form realizable"  # no content word to swap: all form


def test_nearest_sibling_reference_calibrates_on_the_positives_nearest_siblings():
    """With content_reference "nearest" the positives' margins are over their nearest sibling too (0.9 - 0.72), and
    one close sibling makes the best prompt form realizable where the siblings' mean would not."""
    nearest = VerdictThresholds(content_reference="nearest")
    audit = item("v", activation=axis_evidence("activation", 0.85, siblings=(0.5, 0.82)))
    by_mean = judge_all([audit, *controls()], VerdictThresholds())[0].judgement("activation")
    by_nearest = judge_all([audit, *controls()], nearest)[0].judgement("activation")
    assert by_mean.verdict == "realizable" and by_mean.content.margin == pytest.approx(0.19)
    assert by_nearest.verdict == "form realizable" and by_nearest.content.margin == pytest.approx(0.03)
    assert by_nearest.content.true_margin == pytest.approx(0.18)


def test_content_level_makes_a_margin_within_its_noise_form_realizable():
    """content_level (default 0.95): the best prompt's margin over its siblings (0.85 - 0.6) must exceed its one-sided bootstrap
    spread on the test contexts. Constant per-context evidence: spread 0, realizable; the same mean from contexts
    that disagree (0.1-1.0): the margin's spread is larger than the margin, form realizable."""
    strict = VerdictThresholds()  # content_level 0.95 by default
    steady = item("v", activation=axis_evidence("activation", 0.85, siblings=(0.6,)))
    judged_steady = judge_all([steady, *controls()], strict)[0].judgement("activation")
    assert judged_steady.verdict == "realizable" and "bootstrap spread 0.00" in judged_steady.reason
    evidence = steady.axes["activation"]
    noisy = ContextEvidence((0.1, 1.3, 1.0, 1.0), ((1.0,) * K,) * K)  # mean 0.85
    best = dataclasses.replace(evidence.best, evidence=noisy)
    audit = dataclasses.replace(steady, axes={"activation": dataclasses.replace(evidence, best=best)})
    judged_noisy = judge_all([audit, *controls()], strict)[0].judgement("activation")
    assert judged_noisy.verdict == "form realizable" and "no larger than the noise" in judged_noisy.reason
    off = VerdictThresholds(content_level=None)
    assert judge_all([audit, *controls()], off)[0].verdict == "realizable"  # without it the point margin decides


def _form(prompt_shift: tuple[float, ...]) -> FormEvidence:
    """The content cosine's evidence of a prompt whose shift is `prompt_shift` against two siblings on e1, for a
    steer on e2 (the generic direction e4 removed): (1, 1, 0, 0) adds what the steer adds (0.92), (1, 0, 1, 0)
    mostly something else (0.27)."""
    shifts = torch.tensor([prompt_shift, (1.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)]).unsqueeze(1).expand(3, K, 4)
    return FormEvidence.from_shifts([specific_metric(shifts, torch.tensor([0.0, 1.0, 0.0, 0.0]),
                                                     torch.tensor([0.0, 0.0, 0.0, 1.0]))])


@pytest.mark.parametrize("shift,verdict,words", [
    ((1.0, 1.0, 0.0, 0.0), "realizable", "content cosine 0.92 (true prompts: 0.92)"),
    ((1.0, 0.0, 1.0, 0.0), "form realizable", "does not point where the steer departs"),
])
def test_content_cosine_on_items(shift, verdict, words):
    """--content-cosine: a best prompt that beats its siblings (margin 0.25) must also add to its form what the steer
    adds, at least half the positives' own prompts' median; off by default; no calibration: not plain realizable."""
    strict = VerdictThresholds(content_cosine=True)
    evidence = dataclasses.replace(axis_evidence("activation", 0.85, siblings=(0.6,)), form=_form(shift))
    audit = item("v", activation=evidence)
    positives = [dataclasses.replace(p, axes={"activation": dataclasses.replace(
        p.axes["activation"], true_form=_form((1.0, 1.0, 0.0, 0.0)))}) if p.kind == "positive" else p
        for p in controls()]
    judgement = judge_all([audit, *positives], strict)[0].judgement("activation")
    assert judgement.verdict == verdict and words in judgement.reason
    assert judgement.content.true_cosine == pytest.approx(0.924, abs=1e-3)
    assert judge_all([audit, *positives], VerdictThresholds())[0].verdict == "realizable"  # off by default
    both = item("w", activation=evidence, behavior=axis_evidence("behavior", 0.6, siblings=(0.2,)))
    behavior = [judge_all([both, *positives], t)[0].judgement("behavior") for t in (strict, VerdictThresholds())]
    assert behavior[0].verdict == behavior[1].verdict == "realizable"  # no content cosine on the behavior axis
    uncalibrated = judge_all([audit, *controls()], strict)[0].judgement("activation")  # positives without it
    assert uncalibrated.verdict == "form realizable" and "cannot be calibrated" in uncalibrated.reason


def test_form_test_without_calibration_is_not_plain_realizable():
    """Positives whose own prompts do not beat their siblings: content cannot be told from form here."""
    audit = item("v", activation=axis_evidence("activation", 0.85, siblings=(0.2,)))
    positives = [item(f"pos{i}", "positive", activation=axis_evidence("activation", v, true=(0.8, (0.82,))))
                 for i, v in enumerate((0.8, 0.9, 0.85))]
    nulls = controls()[:4]
    verdict = judge_all([audit, *nulls, *positives], VerdictThresholds())[0].judgement("activation")
    assert verdict.verdict == "form realizable" and "cannot be calibrated" in verdict.reason


def test_generic_rule_on_items():
    """An unrelated instruction above the null bound and within the paired spread: generically realizable; g <= 0
    never is (the old rule called r = 0.45 with g = -0.30 generic)."""
    noisy = judged(0.05, recovery=0.62, unrelated=0.6).audit
    evidence = noisy.axes["behavior"]
    varying = RatioEvidence((0.1, 0.7, 0.2, 0.5), (1.0,) * K)  # recovery 0.625, context to context 0.3-0.9
    close = dataclasses.replace(evidence, best=dataclasses.replace(evidence.best, evidence=varying))
    audit = dataclasses.replace(noisy, axes={**noisy.axes, "behavior": close})
    behavior = judge_all([audit, *controls()], VerdictThresholds())[0].judgement("behavior")
    assert behavior.verdict == "generically realizable" and "Use simple words." in behavior.reason
    assert behavior.content.unrelated_spread > 0.025
    steady = judged(0.05, recovery=0.62, unrelated=0.6).judgement("behavior")
    assert steady.verdict == "realizable"  # the same 0.02 edge, on every context: a real difference
    negative = judged(0.05, recovery=0.62, unrelated=-0.3).judgement("behavior")
    assert negative.verdict == "realizable" and negative.content.outcome == "specific"


def test_behavior_controls_unfloored_and_inert_ones_unusable():
    verdict = judged(0.05, recovery=0.62).judgement("behavior")
    assert verdict.calibration is not None and verdict.calibration.null_mean < -0.5  # measured, not floored at 0
    inert = judged(0.05, recovery=0.9, effect=0.001).judgement("behavior")
    assert inert.verdict == "inconclusive" and "barely changes" in inert.reason
    pool = controls()
    quiet = dataclasses.replace(pool[0], axes={**pool[0].axes, "behavior": axis_evidence("behavior", -0.8,
                                                                                          effect=0.001)})
    audit = item("v", behavior=axis_evidence("behavior", 0.62))
    again = judge_all([audit, quiet, *pool[1:]], VerdictThresholds())[0].judgement("behavior")
    assert quiet.vector_id not in again.controls["null"] and len(again.controls["null"]) == 3


def test_prompt_verdicts_are_decided_on_selection_numbers():
    j = judged(0.85, siblings=(0.5,))
    evidence = j.audit.axes["activation"]
    assert j.judgement("activation").prompt_verdicts[1] == "realizable"
    frontier = (dataclasses.replace(evidence.frontier[1], realism=0.65),  # within the export margin of 0.6
                dataclasses.replace(evidence.frontier[1], selection=0.02, value=0.95))  # test high, selection low
    audit = dataclasses.replace(j.audit, axes={**j.audit.axes,
                                               "activation": dataclasses.replace(evidence, frontier=frontier)})
    pool = controls()
    again = judge_one(audit, [a for a in pool if a.kind == "null"], [a for a in pool if a.kind == "positive"],
                      VerdictThresholds(), axis="activation")
    assert again.prompt_verdicts == ("unverified", "not realizable")


def test_report_is_self_contained_and_escaped(tmp_path):
    items = [judged(0.85, siblings=(0.5,)), judged(0.05), *judge_all(controls(), VerdictThresholds())]
    page = render_report(items, settings="budget quick")
    assert page.count('class="vec"') == len(items)
    assert "realizable" in page and "not realizable" in page and "inconclusive" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "steered &lt;b&gt;" in page
    assert "Why:" in page and "Controls" in page and "form sibling 1" in page and "Content test" in page
    assert "the positive&#x27;s own prompt" in page and "own prompt over its form siblings" in page
    n_plots = sum(2 * len(j.audit.axes) for j in items)  # frontier + per-context, per item and axis
    assert page.count("data:image/png;base64,") == n_plots
    assert "Behavior axis" in page and "Activation axis" in page
    assert "http://" not in page and "https://" not in page  # no network fetches
    write_report(tmp_path / "report.html", page)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page


def _rescaled_null(name: str, planned_norm: float, scale: float, recovery: float) -> VectorAudit:
    """A behavior null planned at |v| = `planned_norm` and rescaled by `scale` to its effect bin."""
    return dataclasses.replace(item(name, "null", norm=planned_norm * scale, behavior=axis_evidence("behavior", recovery)),
                               scale=scale, effect_bin=0)


def test_behavior_nulls_rescaled_to_one_effect_bin_all_judge_whatever_their_norms():
    """Behavior nulls are rescaled to their effect bin, so each lands at a norm of its own: their audited norms must
    not split them (that left a multi-layer steer with 1 usable null of 4, and every null with 0)."""
    nulls = [_rescaled_null(f"bnull{i}", 5.0, a, r)
             for i, (a, r) in enumerate(((0.6, -0.8), (1.8, -0.6), (5.4, -1.2), (16.2, -0.9)))]
    positives = [dataclasses.replace(item(f"bpos{i}", "behavior-positive", behavior=axis_evidence("behavior", r)),
                                     effect_bin=0) for i, r in enumerate((0.6, 0.7, 0.65))]
    steer = dataclasses.replace(item("v", behavior=axis_evidence("behavior", 0.68)), effect_bin=0)
    judgements = {j.audit.name: j.judgement("behavior") for j in judge_all([steer, *nulls, *positives],
                                                                          VerdictThresholds())}
    assert "only" not in judgements["v"].reason and judgements["v"].verdict != "inconclusive"
    assert set(judgements["v"].controls["null"]) == {n.vector_id for n in nulls}
    assert all("usable null" not in judgements[f"bnull{i}"].reason for i in range(4))
    assert all(len(judgements[f"bnull{i}"].controls["null"]) == 3 for i in range(4))


def test_a_steer_is_judged_against_its_own_nulls_whatever_its_batch_holds():
    """Batch independence: nulls planned for another vector's norm bin (same effect bin) do not join a steer's
    nulls, so its verdict is the one it gets alone with its own controls (the demo) or in any batch."""
    own = [_rescaled_null(f"own{i}", 5.0, a, r) for i, (a, r) in enumerate(((0.7, 0.2), (1.1, 0.3), (0.9, 0.1),
                                                                           (1.3, 0.25)))]
    other = [_rescaled_null(f"other{i}", 20.0, a, r) for i, (a, r) in enumerate(((0.3, -1.0), (0.2, -0.9),
                                                                                 (0.25, -1.1), (0.35, -0.8)))]
    positives = [dataclasses.replace(item(f"bpos{i}", "behavior-positive", behavior=axis_evidence("behavior", r)),
                                     effect_bin=0) for i, r in enumerate((0.6, 0.7, 0.65))]
    steer = dataclasses.replace(item("v", behavior=axis_evidence("behavior", 0.5)), effect_bin=0)
    alone = judge_all([steer, *own, *positives], VerdictThresholds())[0].judgement("behavior")
    batch = judge_all([steer, *own, *other, *positives], VerdictThresholds())[0].judgement("behavior")
    assert set(batch.controls["null"]) == {n.vector_id for n in own}
    assert (batch.verdict, batch.calibration, batch.stability) == (alone.verdict, alone.calibration, alone.stability)


def test_behavior_reason_says_why_no_prompt_does_what_the_steer_does():
    """Every prompt measured below 0 (the weak CAA steer's case): the reason gives the steer's effect and the most
    aligned prompt's direction cos and push; one prompt at or above 0 and the clause is not there."""
    def reason(frontier: tuple[float, ...]) -> str:
        evidence = axis_evidence("behavior", -0.35, siblings=(-0.4, -0.3), unrelated=-0.9)
        evidence = dataclasses.replace(evidence, frontier=tuple(_score(f"Prompt {i}.", v, "behavior")
                                                                for i, v in enumerate(frontier)))
        audit = item("v", behavior=evidence)
        return judge_all([audit, *controls()], VerdictThresholds())[0].judgement("behavior").reason

    negative = reason((-0.35, -0.6))
    assert "no prompt of the 5 measured" in negative and "likelier than no prompt (best -0.30)" in negative
    assert "0.500 nats/token" in negative and "direction cos 0.80" in negative
    assert "no prompt of the" not in reason((-0.35, 0.1))


def test_time_left_uses_each_kinds_own_pace():
    from types import SimpleNamespace

    from realize.outputs import duration_text, progress_line, time_left

    finished = [SimpleNamespace(kind="null", seconds=10.0), SimpleNamespace(kind="null", seconds=30.0),
                SimpleNamespace(kind="vector", seconds=100.0)]
    assert time_left([], ["null"]) is None
    # nulls at their mean 20 s, the vector at 100 s, an unseen kind at the mean of all (140 / 3)
    assert time_left(finished, ["null", "null", "null", "positive"]) == pytest.approx(60 + 140 / 3)
    assert time_left(finished, ["vector", "null"]) == pytest.approx(120)
    assert time_left(finished, []) == 0
    assert [duration_text(s) for s in (45, 600, 3 * 3600)] == ["45 s", "10 min", "3.0 h"]
    audit = SimpleNamespace(kind="vector", name="v0", seconds=100.0, axes={})
    assert progress_line(audit, 600.0, 3).endswith("; 3 to go, about 10 min at this pace")
    assert "to go" not in progress_line(audit, None, 0)
