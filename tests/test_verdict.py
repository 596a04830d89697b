"""Verdict statistics on synthetic numbers: prediction bounds, inconclusive calibrations, magnitude, stability."""

from __future__ import annotations

import math

import pytest
import torch

from realize.data.shift import specific_cosine
from realize.verdict import (
    ContextEvidence,
    VerdictThresholds,
    calibrate,
    combine,
    joint_bootstrap,
    judge_direction,
    magnitude,
    prediction_bound,
    student_t_quantile,
)

TH = VerdictThresholds()
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
    """A natural shift and the same shift times 10: same direction verdict, different headline verdict."""
    natural = [4.0 + 0.01 * i for i in range(100)]  # p99 ~ 4.98
    within = magnitude(5.0, 1.0, natural, fve=0.8)
    beyond = magnitude(50.0, 10.0, natural, fve=-5.0)
    assert combine("realizable", within, TH) == "realizable"
    assert combine("realizable", beyond, TH) == "direction realizable"
    assert combine("partially realizable", beyond, TH) == "direction partially realizable"
    assert combine("not realizable", beyond, TH) == "not realizable"
    assert beyond.factor == pytest.approx(50.0 / beyond.natural_p99)
    assert beyond.realizable_scale == pytest.approx(beyond.natural_p99 / 5.0)  # |v| = 5: a* v reaches the p99


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
    gen = torch.Generator().manual_seed(1)
    target, g = torch.randn(32, generator=gen), torch.randn(32, generator=gen)

    def decide(value, null, pos):
        judged = judge_direction(value, null, pos, TH)
        return judged.verdict, None if judged.calibration is None else judged.calibration.score

    nulls = [ContextEvidence.from_shifts(torch.randn(12, 32, generator=gen), torch.randn(32, generator=gen), g)
             for _ in range(6)]  # shifts unrelated to their targets
    positives = [_evidence(target, g, 0.3, 10 + s) for s in range(4)]
    clear = joint_bootstrap(_evidence(target, g, 0.3, 99), nulls, positives, decide, n_resamples=100)
    assert clear.share_same == 1.0 and clear.score_interval is not None
    assert clear.value_interval[0] <= clear.value_interval[1]
    absent = joint_bootstrap(None, nulls, positives, decide, n_resamples=20)
    assert absent.share_same == 1.0 and absent.value_interval is None
    with pytest.raises(ValueError, match="same test contexts"):
        joint_bootstrap(_evidence(target, g, 0.3, 1, k=5), nulls, positives, decide)


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
