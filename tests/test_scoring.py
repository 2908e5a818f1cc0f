"""Scorers (ensemble, multi-step), case score and calibration: exact values on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uadnet.methods.cold_ensemble import ColdEnsembleScorer
from uadnet.methods.cold_multistep import ColdMultistepScorer
from uadnet.scoring.calibration import (
    MEAN_OF_TOP,
    TOP_FRACTIONS_VS_HEALTHY,
    TOP_OVER_MEDIAN,
    CaseScore,
    calibrate,
    case_score,
    case_score_as_calibrated,
)
from uadnet.scoring.scorers import score_volume


class Affine(nn.Module):
    """f(x, α) = a·x + b·α, counting calls and the conditions it saw."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b, self.calls, self.seen = a, b, 0, []

    def forward(self, x, alpha):
        self.calls += 1
        self.seen.append(alpha.clone())
        return self.a * x + self.b * alpha.reshape(-1, *[1] * (x.ndim - 1))


def test_ensemble_scorer_is_one_forward_pass_and_exact():
    x = torch.rand(3, 2, 5, 4)
    model = Affine(1.0, 0.5)
    out = ColdEnsembleScorer(model, [0.2, 0.4], "fp32")(x)
    assert model.calls == 1 and out.shape == (3, 3, 5, 4)
    torch.testing.assert_close(model.seen[0], torch.tensor([0.2] * 3 + [0.4] * 3))
    # |x − (x + 0.5 α)| = 0.5 α; mean over α ∈ {0.2, 0.4} → 0.15; restoration = x + 0.15
    torch.testing.assert_close(out[:, :1], torch.full((3, 1, 5, 4), 0.15))
    torch.testing.assert_close(out[:, 1:], x + 0.15)
    identity = ColdEnsembleScorer(Affine(1.0, 0.0), [0.5], "fp32")(x)
    assert identity[:, 0].abs().max() == 0
    with pytest.raises(ValueError):
        ColdEnsembleScorer(model, [0.0, 0.5])


def test_multistep_scorer_follows_the_reference_update():
    """With f ≡ 0 (x̂₀ = 0): x_{t-1} = (α_{t-1}/α_t) x_t, so x_t = (α_t/α_T) x; the score is the mean over steps of
    |x_t − x̂₀| = mean_t (α_t/α_T) x; the update is clamped to [0, 1]."""
    x = torch.rand(2, 1, 6, 6) + 0.1
    model = Affine(0.0, 0.0)
    out = ColdMultistepScorer(model, num_steps=4, start_severity=1.0)(x)
    assert model.calls == 4
    torch.testing.assert_close([float(s[0]) for s in model.seen], [1.0, 0.75, 0.5, 0.25])
    torch.testing.assert_close(out[:, :1], x * (1.0 + 0.75 + 0.5 + 0.25) / 4, rtol=1e-6, atol=1e-6)
    assert out[:, 1:].abs().max() == 0
    # f = x + 0.5 α on x = 0.8: x̂₀ = 1.3, x_{1/2} = clip(1.05) = 1; x̂₀ = 1.25, x_0 = clip(1.25) = 1;
    # score = (|0.8 − 1.3| + |1 − 1.25|) / 2 = 0.375
    bright = ColdMultistepScorer(Affine(1.0, 0.5), num_steps=2, start_severity=1.0)(torch.full((1, 1, 4, 4), 0.8))
    torch.testing.assert_close(bright[:, 1:], torch.ones(1, 1, 4, 4))
    torch.testing.assert_close(bright[:, :1], torch.full((1, 1, 4, 4), 0.375))


def test_score_volume_returns_score_and_restoration_on_the_volume_grid():
    volume = np.random.default_rng(0).random((2, 3, 10, 9)).astype(np.float32)
    scorer = ColdEnsembleScorer(Affine(1.0, 1.0), [0.25, 0.75])
    score, restoration = score_volume(scorer, volume, [8, 8], batch_size=3)
    assert score.shape == (3, 10, 9) and restoration.shape == (2, 3, 10, 9)
    np.testing.assert_allclose(score, 0.5, atol=1e-6)
    np.testing.assert_allclose(restoration, volume + 0.5, atol=1e-6)


def test_case_score_is_the_mean_of_the_top_percent():
    score = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    assert case_score(score) == pytest.approx(np.mean(np.arange(990, 1000)))
    fg = np.zeros_like(score, bool)
    fg[0] = True  # 100 voxels 0..99 → top 1 % = the single largest
    assert case_score(score, fg) == 99.0
    assert case_score(score, np.zeros_like(fg)) == pytest.approx(994.5)  # empty foreground: every voxel


def test_case_score_over_the_median_divides_by_the_cases_median_voxel():
    score = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    over = CaseScore(TOP_OVER_MEDIAN)
    assert over(score) == pytest.approx(np.mean(np.arange(990, 1000)) / 499.5)
    assert over(score * 3 + 0.0) == pytest.approx(over(score))  # a case whose whole map is 3x higher: same score
    lesion = np.full(1000, 1.0, np.float32)
    lesion[:10] = 5.0  # 1 % of the voxels at 5, the rest at 1
    shifted = lesion + 1.0  # the same lesion on a map that runs higher everywhere
    assert over(lesion) == pytest.approx(5.0) and over(shifted) == pytest.approx(3.0)
    assert case_score(lesion) == pytest.approx(5.0) and case_score(shifted) == pytest.approx(6.0)  # plain top 1 %
    sparse = np.zeros(1000, np.float32)
    sparse[:5] = 2.0  # median 0: divided by a thousandth of the top mean instead
    assert over(sparse) == pytest.approx(1000.0) and over(np.zeros(10, np.float32)) == 0.0
    fg = np.zeros_like(score, bool)
    fg[0] = True  # 0..99: top = 99, median 49.5
    assert over(score, fg) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown case-score reduction 'max'"):
        case_score(score, reduction="max")
    with pytest.raises(ValueError, match="top_fraction must be in"):
        CaseScore(TOP_OVER_MEDIAN, 0.0)


def test_the_plans_choose_the_case_score_and_refuse_unknown_ones():
    from uadnet.plans import InferencePlan, PlansError

    assert InferencePlan().case_score == TOP_FRACTIONS_VS_HEALTHY
    assert InferencePlan(case_score=MEAN_OF_TOP).case_score == MEAN_OF_TOP
    with pytest.raises(PlansError, match="'inference.case_score' must be one of .* got 'max'"):
        InferencePlan(case_score="max")


def test_calibration_writes_how_its_case_scores_were_computed_and_reads_it_back():
    scores = [np.linspace(0, 1, 1000, dtype=np.float32) ** k for k in (1, 2, 3)]
    fgs = [np.ones(1000, bool)] * 3
    spec = CaseScore(TOP_OVER_MEDIAN, 0.05)
    calib = calibrate(scores, fgs, case_quantile=0.5, spec=spec)
    assert calib["case_score"] == {"reduction": TOP_OVER_MEDIAN, "top_fraction": 0.05}
    assert case_score_as_calibrated(calib) == spec
    assert calib["case_threshold"] == pytest.approx(np.median([spec(s) for s in scores]))
    assert case_score_as_calibrated({}) == CaseScore(MEAN_OF_TOP, 0.01)  # files written before the key
    assert calibrate(scores, fgs)["case_score"]["reduction"] == MEAN_OF_TOP  # the baselines' default


def _flat_with_top(n_high: int, high: float, n: int = 10000) -> np.ndarray:
    """``n`` voxels at 1 (the median) of which the first ``n_high`` are at ``high``."""
    m = np.ones(n, np.float32)
    m[:n_high] = high
    return m


def test_case_score_against_healthy_cases_takes_the_scale_a_case_stands_out_at():
    healthy = [_flat_with_top(100, 2.0), _flat_with_top(100, 8.0)]  # top 1 % and top 0.01 % over the median: 2, 8
    spec = CaseScore(TOP_FRACTIONS_VS_HEALTHY)
    assert spec.top_fractions == (0.01, 0.0001) and not spec.is_fitted
    with pytest.raises(ValueError, match="fit it first"):
        spec(healthy[0])
    with pytest.raises(ValueError, match="fitted on healthy maps: use CaseScore"):
        case_score(healthy[0], reduction=TOP_FRACTIONS_VS_HEALTHY)
    fitted = spec.fitted(healthy, [None, None])
    assert fitted.healthy_ratios == pytest.approx((4.0, 4.0))  # geometric means of (2, 8)
    spot = _flat_with_top(1, 40.0)  # one voxel: top 1 % = (40 + 99) / 100, top 0.01 % = 40
    large = _flat_with_top(100, 6.0)
    assert fitted(spot) == pytest.approx(40.0 / 4.0) and fitted(large) == pytest.approx(6.0 / 4.0)
    assert [fitted(h) for h in healthy] == pytest.approx([0.5, 2.0])
    over = CaseScore(TOP_OVER_MEDIAN)  # the top 1 % alone ranks the spot below the second healthy case
    assert over(spot) == pytest.approx(1.39) and over(spot) < over(healthy[1])
    assert fitted(spot) > max(fitted(h) for h in healthy)
    assert fitted(spot * 3) == pytest.approx(fitted(spot))  # a map that runs 3x higher everywhere: same score
    calib = calibrate(healthy, [None, None], case_quantile=0.5, spec=spec)  # fitted on the calibration maps
    assert calib["case_score"] == {"reduction": TOP_FRACTIONS_VS_HEALTHY, "top_fractions": [0.01, 0.0001],
                                   "healthy_ratios": pytest.approx([4.0, 4.0])}
    assert calib["case_threshold"] == pytest.approx(1.25)  # median of the healthy 0.5 and 2
    assert case_score_as_calibrated(calib)(spot) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="calibration.json: .*without its healthy ratios.*recalibrate"):
        case_score_as_calibrated({"case_score": {"reduction": TOP_FRACTIONS_VS_HEALTHY, "top_fractions": [0.01],
                                                 "healthy_ratios": []}})
    with pytest.raises(ValueError, match="one positive value per top fraction"):
        CaseScore(TOP_FRACTIONS_VS_HEALTHY, healthy_ratios=(1.0,))


def test_folds_average_their_healthy_ratios_and_must_compute_alike():
    a = CaseScore(TOP_FRACTIONS_VS_HEALTHY, healthy_ratios=(4.0, 4.0))
    b = CaseScore(TOP_FRACTIONS_VS_HEALTHY, healthy_ratios=(1.0, 16.0))
    assert CaseScore.mean_of([a, b]).healthy_ratios == pytest.approx((2.0, 8.0))
    assert CaseScore.mean_of([CaseScore(TOP_OVER_MEDIAN)] * 2) == CaseScore(TOP_OVER_MEDIAN)
    with pytest.raises(ValueError, match="computed their case scores differently"):
        CaseScore.mean_of([a, CaseScore(TOP_OVER_MEDIAN)])


def test_calibration_thresholds_are_healthy_quantiles():
    scores = [np.linspace(0, 1, 1001, dtype=np.float32)[:1000], np.linspace(0, 1, 1001, dtype=np.float32)[1:]]
    fgs = [np.ones(1000, bool), np.ones(1000, bool)]
    calib = calibrate(scores, fgs, false_positive_rates=(0.01, 0.05), case_quantile=0.5)
    pooled = np.concatenate(scores)
    for r in (0.01, 0.05):
        t = calib["voxel_thresholds"][str(r)]
        assert t == pytest.approx(np.quantile(pooled, 1 - r))
        assert (pooled > t).mean() == pytest.approx(r, abs=1e-3)
    cases = [case_score(s) for s in scores]
    assert calib["case_threshold"] == pytest.approx(np.median(cases))
    assert calib["num_cases"] == 2 and calib["num_voxels"] == 2000
    with pytest.raises(ValueError):
        calibrate([], [])
