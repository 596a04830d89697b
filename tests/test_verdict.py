"""Verdict statistics and rules on synthetic numbers: prediction bounds, inconclusive calibrations, zero spread, no
floors, the content rules (generic, form), magnitude, stability."""

from __future__ import annotations

import math

import pytest
import torch

from realize.data.resample import resample_weights
from realize.data.shift import specific_cosine
from realize.magnitude import NaturalNorms, magnitude, magnitude_at
from realize.resampling import (ContextEvidence, FormEvidence, RatioEvidence, paired_spread, resampled_values,
                                specific_metric)
from realize.stats import (AxisInputs, axis_case, margin_spread, place, prediction_bound, sibling_margin,
                           student_t_quantile)
from realize.stats import calibrate as calibrate_at
from realize.verdict import (
    PromptInputs,
    RealismBand,
    VerdictThresholds,
    content_passes,
    cosine_passes,
    is_generic,
    judge_axis,
    qualify,
)
from realize.verdict import decide as decide_case
from realize.verdict import judge_direction as judge_placed

TH = VerdictThresholds()


def _alphas(th: VerdictThresholds) -> dict[str, float]:
    return {"realizable_alpha": th.realizable_alpha, "partial_alpha": th.partial_alpha}


def calibrate(value, null, positive, th=TH):  # noqa: ANN001, ANN201
    return calibrate_at(value, null, positive, **_alphas(th))


def judge_direction(value, null, positive, th=TH, *, what="value"):  # noqa: ANN001, ANN201
    """The direction rule on a value placed among its controls (the statistics first, as `judging` does)."""
    return judge_placed(place(value, null, positive, **_alphas(th)), th, what=what)


def decide(inputs, th=TH):  # noqa: ANN001, ANN201
    return decide_case(axis_case(inputs, reference=th.content_reference, **_alphas(th)), th)
NULL = [0.02, 0.05, 0.08, 0.04, 0.06, 0.03]  # random directions: best specific cos after the same search
POSITIVE = [0.85, 0.9, 0.8, 0.88]  # natural-prompt shifts


@pytest.mark.parametrize("p,df,expected", [(0.99, 2, 6.9646), (0.95, 5, 2.0150), (0.975, 10, 2.2281),
                                           (0.99, 30, 2.4573), (0.5, 7, 0.0), (0.05, 4, -2.1318)])
def test_student_t_quantiles_match_tables(p, df, expected):
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=2e-4)


def test_prediction_bound_accounts_for_few_controls():
    """The same spread gives a wider bound from fewer nulls: 3 nulls are a valid but conservative test."""
    few, many = [0.1, 0.12, 0.08], [0.1, 0.12, 0.08] * 4
    assert prediction_bound(few, 0.01) > prediction_bound(many, 0.01) > 0.12
    mean, sd = 0.1, torch.tensor(few).std().item()
    assert prediction_bound(few, 0.01) == pytest.approx(mean + 6.9646 * sd * math.sqrt(4 / 3), rel=1e-3)


@pytest.mark.parametrize(
    "value,expected",
    [(0.86, "realizable"), (0.5, "partially realizable"), (0.07, "not realizable"), (-0.3, "not realizable")],
)
def test_direction_verdict_on_synthetic_distributions(value, expected):
    assert judge_direction(value, NULL, POSITIVE, TH).verdict == expected


def test_failed_calibration_is_inconclusive_not_realizable():
    """The issue's example: positives below nulls used to give score 1.0, z 9, `realizable`."""
    judged = judge_direction(0.2, [0.10, 0.11, 0.12], [0.05, 0.06, 0.07], TH)
    assert judged.verdict == "inconclusive" and "do not beat" in judged.reason
    assert judged.calibration is not None and judged.calibration.score == 0.0


def test_positives_barely_above_nulls_are_inconclusive():
    noisy_null = [0.0, 0.3, 0.1, 0.25]
    judged = judge_direction(0.9, noisy_null, [0.35, 0.45, 0.4], TH)
    assert judged.verdict == "inconclusive"


@pytest.mark.parametrize("n_null,n_pos", [(2, 4), (6, 2), (1, 1), (0, 3)])
def test_too_few_controls_are_inconclusive(n_null, n_pos):
    judged = judge_direction(0.86, NULL[:n_null], POSITIVE[:n_pos], TH)
    assert judged.verdict == "inconclusive" and "usable" in judged.reason and judged.calibration is None


def test_no_natural_candidate_is_its_own_outcome():
    judged = judge_direction(None, NULL, POSITIVE, TH)
    assert judged.verdict == "no natural candidate" and judged.calibration is None


def test_noisy_null_blocks_realizable():
    """A high score is not enough when the null's prediction bound is above the value."""
    wide_null = [0.0, 0.6, -0.5, 0.4, -0.3, 0.7]
    cal = calibrate(0.85, wide_null, POSITIVE, TH)
    assert cal.score > 0.7 and cal.realizable_bound > 0.85
    assert judge_direction(0.85, wide_null, POSITIVE, VerdictThresholds(separation_sd=0)).verdict != "realizable"


def test_calibration_numbers():
    c = calibrate(0.46, [0.0, 0.1, 0.05], [0.8, 1.0, 0.9], TH)
    assert c.score == pytest.approx((0.46 - 0.05) / (0.9 - 0.05))
    assert c.null_percentile == 1.0 and c.positive_percentile == 0.0 and (c.n_null, c.n_positive) == (3, 3)
    assert calibrate(5.0, NULL, POSITIVE, TH).score == 1.0 and calibrate(-5.0, NULL, POSITIVE, TH).score == 0.0


def test_magnitude_beyond_natural_is_not_realizable():
    """A natural shift and the same shift times 10: same direction verdict, different headline verdict; the rule
    a > c * a* and the reason text agree."""
    natural = NaturalNorms.of([4.0 + 0.01 * i for i in range(100)])  # p99 ~ 4.98
    within = magnitude(5.0, 1.0, natural, fve=0.8)
    beyond = magnitude(50.0, 10.0, natural, fve=-5.0)
    c = TH.magnitude_factor
    assert qualify("realizable", "specific", within.beyond(c)) == "realizable"
    assert qualify("realizable", "specific", beyond.beyond(c)) == "direction realizable"
    assert qualify("partially realizable", "specific", beyond.beyond(c)) == "direction partially realizable"
    assert qualify("not realizable", None, beyond.beyond(c)) == "not realizable"
    assert beyond.factor == pytest.approx(50.0 / beyond.natural_p99)
    assert beyond.realizable_scale == pytest.approx(beyond.natural_p99 / 5.0)  # |v| = 5: a* v reaches the p99
    assert beyond.factor == pytest.approx(beyond.scale / beyond.realizable_scale)  # k = a / a*
    slightly = magnitude(1.3 * natural.p99, 1.0, natural, fve=None)  # 1.3x the p99: beyond p99, within c = 1.5
    assert not slightly.beyond(c) and "within natural" in slightly.note(c) and "<= 1.5" in slightly.note(c)
    assert "beyond natural" in beyond.note(c) and "> 1.5" in beyond.note(c)


def test_magnitude_of_several_layers_is_the_worst_layer():
    norms = {3: NaturalNorms(2.0, 4.0, 10), 5: NaturalNorms(2.0, 8.0, 10)}
    mag = magnitude_at({3: 6.0, 5: 6.0}, 2.0, norms, fve=None)
    assert mag.factor == pytest.approx(1.5) and mag.realizable_scale == pytest.approx(4.0 / 3.0)
    assert [row[0] for row in mag.per_layer] == [3, 5]


def test_controls_are_never_floored():
    """Behavior nulls below 0 (measured: -0.79, -0.64, -2.85, -1.60) keep their values: with a floor at 0 the
    prediction bound would be 0.00 and a recovery of 0.30 'partially realizable'; unfloored the nulls' spread is
    real, and the positives (0.14-0.57) do not beat them by 3 pooled sd: inconclusive."""
    null, positive = [-0.79, -0.64, -2.85, -1.60], [0.14, 0.57, 0.30, 0.45]
    judged = judge_direction(0.30, null, positive, TH, what="recovery")
    assert judged.verdict == "inconclusive" and judged.calibration is not None
    assert judged.calibration.partial_bound > 0.30  # the bound of real nulls is far from 0
    floored = judge_direction(0.30, [max(v, 0.0) for v in null], positive, TH, what="recovery")
    assert floored.verdict == "inconclusive" and "zero spread" in floored.reason  # never "partially realizable"


def test_zero_spread_nulls_are_inconclusive():
    judged = judge_direction(0.9, [0.1, 0.1, 0.1, 0.1], POSITIVE, TH)
    assert judged.verdict == "inconclusive" and "zero spread" in judged.reason and judged.calibration is None


def test_ratio_evidence_pools_instead_of_averaging_ratios():
    """One context the steer barely changes cannot sink a pooled recovery (a mean of per-context ratios: 0.0)."""
    evidence = RatioEvidence(numerators=(1.0, 1.0, 0.5), denominators=(4.0, 4.0, 0.01))
    per_context = [1 - n / d for n, d in zip(evidence.numerators, evidence.denominators, strict=True)]
    assert sum(per_context) / 3 < -10 and evidence.value() == pytest.approx(1 - 2.5 / 8.01)
    assert evidence.value(torch.tensor([0, 0, 3])) == pytest.approx(1 - 1.5 / 0.03)  # never floored
    assert math.isnan(RatioEvidence((0.0,), (0.0,)).value())


@pytest.mark.parametrize("value,unrelated,spread,expected", [
    (0.6, 0.55, 0.1, True),  # the unrelated instruction clears the bound and the prompt is within its spread
    (0.6, 0.3, 0.1, False),  # g <= ... below the null bound: not generic (the direction verdict stays)
    (0.6, -0.3, 0.5, False),  # g <= 0 never makes a prompt generic (the old rule reduced to r < 0.5 there)
    (0.9, 0.55, 0.1, False),  # the prompt beats it by more than the spread
    (0.5, 0.7, 0.05, True),  # r < g: the unrelated instruction does better
    (0.6, None, 0.1, False),  # no panel
])
def test_generic_rule(value, unrelated, spread, expected):
    assert is_generic(value, unrelated, bound=0.4, spread=spread) is expected


@pytest.mark.parametrize("margin,true_margin,expected", [
    (0.10, 0.15, True), (0.05, 0.15, False), (0.2, None, False), (None, 0.15, False), (0.1, -0.02, False),
    (0.1, 0.0, False),
])
def test_content_rule(margin, true_margin, expected):
    """The best prompt must beat its form siblings by half the margin true prompts show over theirs; no calibration
    (no positive margin, or none above 0) or no content word fails."""
    assert content_passes(margin, true_margin, TH, 0.0) is expected  # spread 0: only the fraction rule decides


@pytest.mark.parametrize("margin,spread,expected", [
    (0.3, 0.1, True),  # beats its siblings by more than the resampling moves the margin
    (0.3, 0.3, False),  # margin - spread = 0: not distinguishable from no margin
    (0.3, 0.45, False),  # the noise is larger than the margin
    (0.3, math.nan, False),  # no spread measured: the test asked for one cannot pass
    (0.1, 0.0, False),  # a margin with zero spread still needs content_fraction of the true margin (0.5 * 0.4)
])
def test_content_level_needs_the_margin_above_its_spread(margin, spread, expected):
    assert TH.content_level == 0.95  # the default
    assert content_passes(margin, 0.4, TH, spread) is expected
    off = VerdictThresholds(content_level=None)
    assert content_passes(margin, 0.4, off, spread) is (margin >= 0.2)  # off: the spread is not read


def _content_cosine_directly(proj: torch.Tensor, unit: torch.Tensor, w: torch.Tensor) -> float:
    """cos(e_0 - s, u - s) from the shifts themselves: proj (A, K, d), unit (d,), w (K,)."""
    means = (w.double()[None, :, None] * proj).sum(dim=1)
    e = means / means.norm(dim=1, keepdim=True)
    s = e[1:].mean(dim=0)
    return float(torch.nn.functional.cosine_similarity(e[0] - s, unit - s, dim=0))


def test_form_evidence_is_the_cosine_of_mean_shifts_on_every_resample():
    """FormEvidence keeps inner products only, yet recomputes the content cosine of the weighted mean shifts on any
    resample of the test contexts; several layers: the mean over layers; no sibling: nan."""
    torch.manual_seed(0)
    shifts, target, generic, whiten = torch.randn(5, 6, 16), torch.randn(16), torch.randn(16), torch.randn(16, 16)
    proj, unit = specific_metric(shifts, target, generic, whiten)
    form = FormEvidence.from_shifts([(proj, unit)])
    weights = torch.stack(list(resample_weights(6, 20, seed=3)))
    direct = [_content_cosine_directly(proj, unit, w) for w in weights]
    assert form.values(weights).tolist() == pytest.approx(direct, abs=1e-5)
    assert form.value() == pytest.approx(_content_cosine_directly(proj, unit, torch.ones(6)), abs=1e-5)
    other_proj, other_unit = specific_metric(shifts.flip(0), target, generic)
    two = FormEvidence.from_shifts([(proj, unit), (other_proj, other_unit)])
    assert two.value() == pytest.approx((form.value() + _content_cosine_directly(other_proj, other_unit,
                                                                                 torch.ones(6))) / 2, abs=1e-5)
    assert math.isnan(FormEvidence.from_shifts([(proj[:1], unit)]).value())  # nothing to compare with


def test_content_cosine_tells_the_steers_content_from_a_wrong_one():
    """Siblings share a form f and differ in content c_i; the steer is f + c_true. The prompt carrying c_true scores
    ~1; one carrying another content keeps only what both share by construction (minus the siblings' mean), far
    below half of that, so the rule's cut (half the true prompts' median) separates them."""
    torch.manual_seed(1)
    d, k = 64, 8
    form_shift = 3 * torch.randn(d)
    contents = torch.randn(6, d)
    steer = form_shift + contents[0]

    def shifts(first: int) -> torch.Tensor:  # the prompt (content `first`) then four siblings (contents 2..5)
        order = [first, 2, 3, 4, 5]
        return torch.stack([form_shift + contents[i] + 0.05 * torch.randn(k, d) for i in order])

    no_generic = torch.zeros(d)
    no_generic[0] = 1.0
    right = FormEvidence.from_shifts([specific_metric(shifts(0), steer, no_generic)]).value()
    wrong = FormEvidence.from_shifts([specific_metric(shifts(1), steer, no_generic)]).value()
    assert right > 0.95 and wrong < 0.5 * right


@pytest.mark.parametrize("cosine,true_cosine,expected", [
    (0.1, 0.15, True), (0.05, 0.15, False), (None, 0.15, False), (math.nan, 0.15, False), (0.2, 0.0, False),
    (0.2, -0.1, False), (0.2, None, False),
])
def test_content_cosine_rule(cosine, true_cosine, expected):
    """Half the positives' median content cosine; no cosine, or no calibration (none measured, or a median <= 0),
    fails; the rule is read only when asked for (`content_cosine`)."""
    assert cosine_passes(cosine, true_cosine, 0.5) is expected
    strict = VerdictThresholds(content_cosine=True)
    assert content_passes(0.3, 0.4, strict, 0.1, cosine, true_cosine) is expected  # the margin itself passes
    assert content_passes(0.3, 0.4, TH, 0.1, cosine, true_cosine) is True  # default: off
    assert content_passes(0.05, 0.4, strict, 0.0, 0.9, 0.15) is False  # the cosine adds a test, never replaces one


def test_decide_with_the_content_cosine():
    strict = VerdictThresholds(content_cosine=True)
    assert decide(_inputs(content_cosine=0.3, true_cosine=0.4), strict).verdict == "realizable"
    weak = decide(_inputs(content_cosine=0.1, true_cosine=0.4), strict)
    assert (weak.verdict, weak.content) == ("form realizable", "form")
    assert decide(_inputs(content_cosine=0.1, true_cosine=0.4), TH).verdict == "realizable"  # off by default
    resampled = _inputs(content_cosine=0.3).resampled([[0.86], NULL, POSITIVE, [0.5, 0.52], [0.1], [0.86], [0.05]])
    assert resampled.content_cosine == 0.05  # the cosine is resampled with everything else
    kept = _inputs(content_cosine=0.3).resampled([[0.86], NULL, POSITIVE, [0.5, 0.52], [0.1], [0.86]])
    assert kept.content_cosine == 0.3  # no cosine group: the point value stands


def test_margin_spread_is_the_one_sided_quantile_distance():
    resampled = [0.1 * i for i in range(11)]  # 0.0 .. 1.0; the 10% quantile is 0.1
    assert margin_spread(0.5, resampled, 0.9) == pytest.approx(0.4)
    assert margin_spread(0.5, [0.5] * 20, 0.95) == 0.0  # never moves: zero spread
    assert margin_spread(0.0, resampled + [None, math.nan], 0.9) == 0.0  # clamped at 0, missing values skipped
    assert math.isnan(margin_spread(None, resampled, 0.9)) and math.isnan(margin_spread(0.5, [None], 0.9))
    with pytest.raises(ValueError, match="content_level"):
        VerdictThresholds(content_level=0.4)


def test_decide_with_content_level_reads_the_inputs_spread():
    assert decide(_inputs(margin_spread=0.1), TH).content == "specific"  # margin 0.35 - 0.1 > 0
    noisy = decide(_inputs(margin_spread=0.4), TH)
    assert (noisy.verdict, noisy.content) == ("form realizable", "form")
    assert decide(_inputs(margin_spread=0.4), VerdictThresholds(content_level=None)).content == "specific"  # off


def test_sibling_margin_over_the_mean_or_the_nearest_sibling():
    assert sibling_margin(0.8, (0.5, 0.7, math.nan), "mean") == pytest.approx(0.2)
    assert sibling_margin(0.8, (0.5, 0.7, math.nan), "nearest") == pytest.approx(0.1)
    assert sibling_margin(0.8, (0.9, 0.5), "nearest") == pytest.approx(-0.1)  # one sibling does better
    assert sibling_margin(0.8, (math.nan,), "mean") is None  # no finite sibling: nothing to compare
    assert sibling_margin(None, (0.5,), "nearest") is None
    with pytest.raises(ValueError, match="content_reference"):
        VerdictThresholds(content_reference="median")  # type: ignore[arg-type]


def test_nearest_reference_needs_every_sibling_beaten():
    """One sibling close to the prompt fails the nearest-sibling test where the mean of the others would hide it; the
    calibration margin is the caller's (the positives' own margins, taken with the same reference)."""
    inputs = _inputs(siblings=(0.3, 0.84), true_margin=0.2)  # mean margin 0.29, nearest 0.02
    assert decide(inputs, TH).content == "specific"
    nearest = decide(inputs, VerdictThresholds(content_reference="nearest"))
    assert (nearest.verdict, nearest.content) == ("form realizable", "form")
    assert nearest.content_margin == pytest.approx(0.02)
    assert decide(_inputs(siblings=(0.3, 0.7), true_margin=0.2),
                  VerdictThresholds(content_reference="nearest")).content == "specific"  # 0.16 >= 0.1


def test_qualify_orders_generic_form_and_magnitude():
    assert qualify("realizable", "generic", True) == "generically realizable"
    assert qualify("partially realizable", "form", False) == "form realizable"
    assert qualify("realizable", "form", True) == "form realizable"
    assert qualify("realizable", "specific", False) == "realizable"
    assert qualify("inconclusive", "specific", True) == "inconclusive"


def test_paired_spread_is_zero_for_identical_and_grows_with_noise():
    gen = torch.Generator().manual_seed(3)
    target, g = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    a = _evidence(target, g, 0.3, 1)
    assert paired_spread(a, a) == 0.0
    assert paired_spread(a, _evidence(target, g, 3.0, 2)) > paired_spread(a, _evidence(target, g, 0.3, 2)) >= 0.0


def test_thresholds_validated():
    with pytest.raises(ValueError, match="partial_score"):
        VerdictThresholds(partial_score=0.9, realizable_score=0.5)
    with pytest.raises(ValueError, match="min_realism"):
        VerdictThresholds(min_realism=2)
    with pytest.raises(ValueError, match="realizable_alpha"):
        VerdictThresholds(realizable_alpha=0.1, partial_alpha=0.05)
    with pytest.raises(ValueError, match="min_controls"):
        VerdictThresholds(min_controls=1)
    with pytest.raises(ValueError):
        calibrate(0.5, [0.1], POSITIVE, TH)


def _evidence(target: torch.Tensor, generic: torch.Tensor, noise: float, seed: int, k: int = 12) -> ContextEvidence:
    gen = torch.Generator().manual_seed(seed)
    per_context = target + noise * torch.randn(k, target.shape[0], generator=gen)
    return ContextEvidence.from_shifts(per_context, target, generic)


def test_evidence_recomputes_the_specific_cosine():
    gen = torch.Generator().manual_seed(0)
    target, g = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    per_context = target + 0.7 * torch.randn(9, 16, generator=gen)
    evidence = ContextEvidence.from_shifts(per_context, target, g)
    assert evidence.value() == pytest.approx(specific_cosine(per_context.mean(0), target, g), abs=1e-6)
    w = torch.tensor([2, 0, 1, 1, 0, 3, 1, 1, 0])
    resampled = per_context.repeat_interleave(w, dim=0)
    assert evidence.value(w) == pytest.approx(specific_cosine(resampled.mean(0), target, g), abs=1e-6)


def test_joint_bootstrap_stability():
    """Every group is resampled with the same context draws; the verdict re-run on each resample gives the share
    that agrees with the point verdict, and intervals of the score and the item's value."""
    gen = torch.Generator().manual_seed(1)
    target, g = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    nulls = [ContextEvidence.from_shifts(torch.randn(12, 32, generator=gen), torch.randn(32, generator=gen), g)
             for _ in range(6)]  # shifts unrelated to their targets
    positives = [_evidence(target, g, 0.3, 10 + s) for s in range(4)]
    item = _evidence(target, g, 0.3, 99)
    groups = [[item], nulls, positives, [], [], []]
    table = resampled_values(groups, n_resamples=100)
    assert len(table) == 100 and [len(group) for group in table[0]] == [1, 6, 4, 0, 0, 0]
    inputs = _inputs(value=item.value(), null=tuple(e.value() for e in nulls),
                     positive=tuple(e.value() for e in positives), siblings=(), content_value=None, unrelated=None)
    cases = [axis_case(inputs.resampled(values), reference="mean", **_alphas(TH)) for values in table]
    point = axis_case(inputs, reference="mean", **_alphas(TH))
    band = RealismBand(0.1, 0.3, 0.1)
    clear = judge_axis(point, cases, [], band, TH).stability
    assert clear.share_same == 1.0 and clear.score_interval is not None
    assert clear.value_interval[0] <= clear.value_interval[1]
    # the same draws for every group: a null's resampled value is its value under the item's context weights
    weights = torch.stack(list(resample_weights(item.size, 100, 0)))
    assert table[3][1][2] == pytest.approx(nulls[2].values(weights)[3].item())
    assert resampled_values([[], [], []]) == []  # no evidence: nothing to resample, stable by definition
    assert judge_axis(point, [], [], band, TH).stability.share_same == 1.0
    with pytest.raises(ValueError, match="same test contexts"):
        resampled_values([[_evidence(target, g, 0.3, 1, k=5)], nulls, positives])


def test_natural_nulls_lie_in_the_natural_subspace_at_the_norm():
    from realize.targets import isotropic_nulls, natural_nulls, natural_subspace

    gen = torch.Generator().manual_seed(0)
    # shifts that vary along 3 directions only (plus a shared offset, removed by centering)
    modes = torch.linalg.qr(torch.randn(16, 3, generator=gen))[0].T
    shifts = torch.randn(200, 3, generator=gen) * torch.tensor([5.0, 2.0, 1.0]) @ modes + 7.0
    basis = natural_subspace(shifts, energy=0.999)
    assert basis.shape == (3, 16)
    nulls = natural_nulls(shifts, 50, 4.0, gen)
    assert torch.allclose(nulls.norm(dim=1), torch.full((50,), 4.0), atol=1e-4)
    inside = (nulls.double() @ basis.T).norm(dim=1)
    assert torch.allclose(inside, torch.full((50,), 4.0, dtype=torch.float64), atol=1e-3)
    # uniform on the subspace's sphere, not weighted by the spectrum: the weakest mode gets a third of the energy
    weak = ((nulls.double() @ modes[2].double()) ** 2).mean() / 16.0
    assert 0.2 < float(weak) < 0.47
    iso = isotropic_nulls(16, 50, 4.0, gen)
    assert float((iso.double() @ basis.T).norm(dim=1).mean()) < 3.0  # isotropic ones mostly leave the subspace
    with pytest.raises(ValueError, match="two natural shifts"):
        natural_subspace(shifts[:1])


def _inputs(**changes) -> AxisInputs:
    base = dict(value=0.86, null=tuple(NULL), positive=tuple(POSITIVE), content_value=0.86, siblings=(0.5, 0.52),
                unrelated=0.1, spread=0.05, margin_spread=0.02, true_margin=0.4, beyond_magnitude=False,
                inert=False, what="specific cos")
    return AxisInputs(**{**base, **changes})


@pytest.mark.parametrize("changes,verdict,content", [
    ({}, "realizable", "specific"),  # beats its siblings by 0.35 >= 0.5 * 0.4
    ({"siblings": (0.8, 0.82)}, "form realizable", "form"),  # by 0.05 only
    ({"unrelated": 0.84}, "generically realizable", "generic"),  # generic is tested before form
    ({"beyond_magnitude": True}, "direction realizable", "specific"),
    ({"value": 0.3}, "not realizable", None),  # no content test on a failing direction
    ({"inert": True}, "inconclusive", None),
    ({"null": (0.05,) * 6}, "inconclusive", None),  # zero spread: no prediction bound
])
def test_decide_runs_the_whole_rule_chain(changes, verdict, content):
    decision = decide(_inputs(**changes), TH)
    assert (decision.verdict, decision.content) == (verdict, content)
    assert decision.verdict == qualify(decision.direction.verdict, decision.content,
                                       _inputs(**changes).beyond_magnitude) or _inputs(**changes).inert


def test_judge_axis_prompt_verdicts_use_selection_values_and_the_realism_band():
    band = RealismBand(unnatural_below=0.1, min_realism=0.3, export_margin=0.1)
    prompts = [PromptInputs(0.05, 0.9), PromptInputs(0.35, 0.9), PromptInputs(0.6, 0.9), PromptInputs(0.6, 0.02)]
    placed = [(p, place(p.selection, NULL, POSITIVE, **_alphas(TH))) for p in prompts]
    decided = judge_axis(axis_case(_inputs(), reference="mean", **_alphas(TH)), [], placed, band, TH)
    assert decided.decision.verdict == "realizable"
    assert decided.prompt_verdicts == ("not natural", "unverified", "realizable", "not realizable")
    inert = judge_axis(axis_case(_inputs(inert=True), reference="mean", **_alphas(TH)), [], placed, band, TH)
    assert set(inert.prompt_verdicts) == {"inconclusive"}
