"""Postprocessing steps (exact effects on hand-made maps) and the greedy choice on validation maps."""

from __future__ import annotations

import numpy as np
import pytest

from uadnet.postprocessing import Postprocessing, apply_postprocessing, decide_postprocessing


def test_foreground_mask_and_identity():
    score = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    fg = score >= 10
    np.testing.assert_array_equal(apply_postprocessing(score, fg, (1, 1, 1), Postprocessing()), score)
    out = apply_postprocessing(score, fg, (1, 1, 1), Postprocessing(foreground_mask=True))
    np.testing.assert_array_equal(out, np.where(fg, score, 0))
    assert score[0, 0, 1] == 1  # the input is not modified


def test_gaussian_smoothing_in_mm_and_in_plane_only():
    score = np.zeros((21, 21, 21), np.float32)
    score[10, 10, 10] = 1.0
    iso = apply_postprocessing(score, None, (1, 1, 1), Postprocessing(gaussian_sigma_mm=2.0))
    assert iso[9, 10, 10] > 0 and iso.sum() == pytest.approx(1.0, abs=1e-4)
    coarse = apply_postprocessing(score, None, (1, 2, 2), Postprocessing(gaussian_sigma_mm=2.0))
    assert coarse[10, 10, 10] > iso[10, 10, 10]  # σ of 2 mm is 1 voxel on a 2 mm grid: less spread
    flat = apply_postprocessing(score, None, (1, 1, 1), Postprocessing(gaussian_sigma_mm=2.0), in_plane_only=True)
    assert flat[9].max() == 0 and flat[11].max() == 0 and flat[10].sum() == pytest.approx(1.0, abs=1e-4)


def test_median_removes_isolated_voxels():
    score = np.zeros((1, 9, 9), np.float32)
    score[0, 4, 4] = 5.0
    score[0, 0:4, 0:4] = 1.0
    out = apply_postprocessing(score, None, (1, 1, 1), Postprocessing(median_size_voxels=3), in_plane_only=True)
    assert out[0, 4, 4] == 0 and out[0, 1, 1] == 1


def test_small_components_are_removed_by_volume_in_mm3():
    score = np.zeros((1, 20, 20), np.float32)
    score[0, 2:4, 2:4] = 0.9  # 4 voxels
    score[0, 10:14, 10:14] = 0.8  # 16 voxels
    pp = Postprocessing(min_component_mm3=10.0, component_threshold=0.5)
    out = apply_postprocessing(score, None, (1.0, 1.0, 1.0), pp)
    assert out[0, 2:4, 2:4].max() == 0 and out[0, 10:14, 10:14].min() == pytest.approx(0.8)
    out = apply_postprocessing(score, None, (1.0, 2.0, 2.0), pp)  # 4 voxels of 4 mm³ = 16 mm³: kept
    assert out[0, 2:4, 2:4].min() == pytest.approx(0.9)


def test_decide_keeps_only_steps_that_raise_ap():
    """Anomalies are blobs, the noise is salt: masking the (noisy) background and smoothing help; the choice is
    recorded with every trial."""
    rng = np.random.default_rng(0)
    scores, labels, fgs = [], [], []
    for _ in range(3):
        label = np.zeros((1, 40, 40), bool)
        cy, cx = rng.integers(12, 28, 2)
        label[0, cy - 3:cy + 3, cx - 3:cx + 3] = True
        fg = np.zeros_like(label)
        fg[0, 5:35, 5:35] = True
        score = 0.3 * label + 0.5 * rng.random(label.shape) + 0.6 * (~fg) * rng.random(label.shape)
        scores.append(score.astype(np.float32))
        labels.append(label)
        fgs.append(fg)
    pp, trials = decide_postprocessing(scores, labels, fgs, [(1.0, 1.0, 1.0)] * 3, in_plane_only=True,
                                       component_threshold=0.45)
    assert pp.foreground_mask and pp.gaussian_sigma_mm is not None
    aps = [t["ap"] for t in trials if t["kept"]]
    assert aps == sorted(aps) and trials[0]["step"] == "none"
    assert {t["step"] for t in trials} >= {"foreground_mask", "median_3", "remove_components_below_10_voxels"}
    assert Postprocessing.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError, match="unknown"):
        Postprocessing.from_dict({"smoothing": 1})
