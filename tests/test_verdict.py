"""Verdict logic on synthetic score distributions."""

from __future__ import annotations

import pytest
import torch

from realize.verdict import VerdictThresholds, bootstrap_specific_cos, calibrate, decide

NULL = [0.02, 0.05, 0.08, 0.04, 0.06, 0.03]  # random directions: best specific cos after the same search
POSITIVE = [0.85, 0.9, 0.8, 0.88]  # natural-prompt shifts


@pytest.mark.parametrize(
    "value,expected",
    [(0.86, "realizable"), (0.6, "partially realizable"), (0.07, "not realizable"), (-0.3, "not realizable")],
)
def test_verdict_on_synthetic_distributions(value, expected):
    assert decide(calibrate(value, NULL, POSITIVE), VerdictThresholds()) == expected


def test_calibration_numbers():
    c = calibrate(0.46, [0.0, 0.1], [0.8, 1.0])
    assert c.score == pytest.approx((0.46 - 0.05) / (0.9 - 0.05))
    assert c.null_percentile == 1.0 and c.positive_percentile == 0.0
    assert c.z_null == pytest.approx((0.46 - 0.05) / torch.tensor([0.0, 0.1]).std().item())
    assert calibrate(5.0, NULL, POSITIVE).score == 1.0 and calibrate(-5.0, NULL, POSITIVE).score == 0.0


def test_noisy_null_blocks_realizable():
    """A high score is not enough when the null is as spread as the gap: z must clear the bar too."""
    wide_null = [0.0, 0.6, -0.5, 0.4, -0.3]
    c = calibrate(0.85, wide_null, POSITIVE)
    assert c.score > 0.7 and decide(c, VerdictThresholds()) != "realizable"


def test_thresholds_validated():
    with pytest.raises(ValueError, match="partial_score"):
        VerdictThresholds(partial_score=0.9, realizable_score=0.5)
    with pytest.raises(ValueError, match="min_realism"):
        VerdictThresholds(min_realism=2)
    with pytest.raises(ValueError):
        calibrate(0.5, [], POSITIVE)


def test_bootstrap_interval_brackets_point_estimate():
    torch.manual_seed(0)
    target, g = torch.randn(16), torch.randn(16)
    per_context = target + 0.5 * torch.randn(12, 16)
    lo, hi = bootstrap_specific_cos(per_context, target, g, n_resamples=300)
    from realize.data.shift import specific_cosine

    point = specific_cosine(per_context.mean(0), target, g)
    assert lo < point and lo < hi  # resampling adds noise, so the point estimate sits near the top
    noisier = bootstrap_specific_cos(target + 2.0 * torch.randn(12, 16), target, g, n_resamples=300)
    assert noisier[1] - noisier[0] > hi - lo
    tight = bootstrap_specific_cos(target.repeat(12, 1), target, g)
    assert tight[0] == pytest.approx(1.0, abs=1e-4) and tight[1] == pytest.approx(1.0, abs=1e-4)
