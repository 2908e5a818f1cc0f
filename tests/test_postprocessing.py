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


def _edge_world(seed: int, lesion: bool):
    """A (1, 16, 32) slice stack: left half flat (0.2), right half striped (edges); the 'restorer' errs by 0.3 on
    every stripe edge and by 0.01 elsewhere; ``lesion`` adds a 3x3 spot on the flat side with residual 0.1 —
    below the edge residuals, above the flat tissue's."""
    rng = np.random.default_rng(seed)
    image = np.full((1, 4, 16, 32), 0.2, np.float32)
    image[0, :, :, 16:] = np.where((np.arange(16) // 2) % 2 == 0, 0.8, 0.2)[None, None, :]
    restoration = image + rng.normal(0, 0.002, image.shape).astype(np.float32)
    score = np.full((4, 16, 32), 0.01, np.float32) + rng.uniform(0, 0.004, (4, 16, 32)).astype(np.float32)
    edges = np.abs(np.diff(image[0], axis=2, prepend=image[0, :, :, :1])) > 0
    score[edges] = 0.3
    label = np.zeros((4, 16, 32), bool)
    if lesion:
        label[1, 6:9, 5:8] = True
        score[label] = 0.1
    return image, restoration, score, label


def test_residual_normalisation_ranks_a_lesion_in_flat_tissue_above_healthy_edges():
    from uadnet.postprocessing.residual_normalisation import fit_residual_normalisation, residual_features
    from uadnet.scoring.average_precision import pooled_ap

    healthy = [_edge_world(s, False) for s in range(3)]
    fg = np.ones((4, 16, 32), bool)
    norm = fit_residual_normalisation([h[2] for h in healthy], [residual_features(h[0], h[1], True) for h in healthy],
                                      [fg] * 3, quantile=0.95, bins=4)
    image, restoration, score, label = _edge_world(7, True)
    raw_ap = pooled_ap([score], [label])
    out = apply_postprocessing(score, fg, (1, 1, 1), Postprocessing(residual_normalisation=norm), True,
                               image=image, restoration=restoration)
    assert raw_ap < 0.5  # the edges (0.3) outrank the lesion (0.1) in the raw map
    assert pooled_ap([out], [label]) == pytest.approx(1.0)
    # healthy tissue of either kind normalises to about 1 (its own 95th percentile)
    healthy_out = norm.apply(healthy[0][2], healthy[0][0], healthy[0][1], True)
    assert np.quantile(healthy_out, 0.95) == pytest.approx(1.0, abs=0.1)


def test_residual_normalisation_round_trips_through_json_and_needs_the_images():
    import json

    from uadnet.postprocessing.residual_normalisation import fit_residual_normalisation, residual_features

    image, restoration, score, _ = _edge_world(1, False)
    fg = np.ones(score.shape, bool)
    fg[:, :, :2] = False
    norm = fit_residual_normalisation([score], [residual_features(image, restoration, False)], [fg], quantile=0.99, bins=6)
    pp = Postprocessing(foreground_mask=True, residual_normalisation=norm)
    back = Postprocessing.from_dict(json.loads(json.dumps(pp.to_dict())))
    assert back == pp
    np.testing.assert_array_equal(
        apply_postprocessing(score, fg, (1, 1, 1), back, image=image, restoration=restoration),
        apply_postprocessing(score, fg, (1, 1, 1), pp, image=image, restoration=restoration))
    with pytest.raises(ValueError, match="restoration"):
        apply_postprocessing(score, fg, (1, 1, 1), pp)
    with pytest.raises(ValueError, match="quantile"):
        fit_residual_normalisation([score], [residual_features(image, restoration, False)], [fg], quantile=1.0)


def test_multiscale_maximum_is_exact_and_keeps_a_spike_a_gaussian_flattens():
    from scipy import ndimage

    from uadnet.postprocessing.postprocessing import fit_multiscale

    score = np.zeros((2, 31, 31), np.float32)
    score[0, 5, 5] = 4.0  # a one-voxel spike
    score[0, 15:25, 15:25] = 1.0  # a broad, weak change
    pp = Postprocessing(multiscale_sigmas_mm=[0.0, 4.0], multiscale_divisors=[2.0, 0.5])
    out = apply_postprocessing(score, None, (3.0, 2.0, 2.0), pp, in_plane_only=True)
    smooth = ndimage.gaussian_filter(score, [0.0, 2.0, 2.0], mode="nearest")  # 4 mm = 2 voxels in-plane
    np.testing.assert_allclose(out, np.maximum(score / 2.0, smooth / 0.5) * 2.0, rtol=1e-6)
    assert out[0, 5, 5] == pytest.approx(4.0)  # the spike keeps its score (the Gaussian alone: < 0.2)
    assert out[0, 20, 20] > 3.0 and out[1].max() == 0  # the blob gains 4x; nothing leaks across slices
    assert Postprocessing.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError, match="divisor"):
        apply_postprocessing(score, None, (1, 1, 1), Postprocessing(multiscale_sigmas_mm=[0.0, 1.0],
                                                                    multiscale_divisors=[1.0]))
    # the fit: each scale's quantile of the healthy foreground scores, exactly
    rng = np.random.default_rng(0)
    healthy = [rng.random((2, 20, 20)).astype(np.float32) for _ in range(2)]
    fgs = [np.ones((2, 20, 20), bool)] * 2
    divisors = fit_multiscale(healthy, fgs, [(1.0, 1.0, 1.0)] * 2, [0.0, 2.0], in_plane_only=True, quantile=0.9)
    smoothed = [ndimage.gaussian_filter(h, [0, 2, 2], mode="nearest") for h in healthy]
    assert divisors == pytest.approx([np.quantile(np.concatenate([h.ravel() for h in healthy]), 0.9),
                                      np.quantile(np.concatenate([h.ravel() for h in smoothed]), 0.9)])
    assert fit_multiscale([np.zeros((1, 4, 4))], [np.ones((1, 4, 4))], [(1, 1, 1)], [0.0]) is None


def test_decide_takes_the_multiscale_maximum_where_a_gaussian_would_erase_small_anomalies():
    """Class 1: broad weak blobs (smoothing helps them), class 2: one-voxel spikes (smoothing erases them). Without
    healthy maps every smoothing is refused (it trades one class for the other); with them the multi-scale maximum
    is tried and kept: the blobs gain as from a Gaussian, the spikes keep their AP."""
    rng = np.random.default_rng(1)

    def noise():
        return (0.5 * rng.random((1, 48, 48))).astype(np.float32)

    scores, labels, healthy = [], [], []
    for _ in range(4):
        label = np.zeros((1, 48, 48), np.uint8)
        cy, cx = rng.integers(10, 30, 2)
        label[0, cy:cy + 8, cx:cx + 8] = 1
        score = noise() + 0.1 * (label == 1)
        for y, x in rng.integers(2, 46, (3, 2)):
            if label[0, y, x] == 0:
                label[0, y, x] = 2
                score[0, y, x] = 0.6
        scores.append(score)
        labels.append(label)
        healthy.append(noise())
    fgs = [np.ones((1, 48, 48), bool)] * 4
    spacings = [(1.0, 1.0, 1.0)] * 4
    without, trials = decide_postprocessing(scores, labels, fgs, spacings, in_plane_only=True)
    step = {t["step"]: t for t in trials}
    assert without.gaussian_sigma_mm is None and "multiscale_max" not in step
    assert step["gaussian_sigma_2_voxel"]["ap_per_class"]["1"] > 2 * step["none"]["ap_per_class"]["1"]
    assert step["gaussian_sigma_2_voxel"]["ap_per_class"]["2"] < 0.1 < step["none"]["ap_per_class"]["2"]
    pp, trials = decide_postprocessing(scores, labels, fgs, spacings, in_plane_only=True, healthy_scores=healthy)
    step = {t["step"]: t for t in trials}
    assert pp.multiscale_sigmas_mm == [0.0, 1.0, 2.0, 4.0] and pp.gaussian_sigma_mm is None
    assert step["multiscale_max"]["kept"]
    assert step["multiscale_max"]["ap_per_class"]["1"] > 2 * step["none"]["ap_per_class"]["1"]
    assert step["multiscale_max"]["ap_per_class"]["2"] >= 0.95 * step["none"]["ap_per_class"]["2"]
