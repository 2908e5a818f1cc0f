"""Intensity novelty: exact histogram behaviour on hand-made images, leave-one-out fitting, the validation choice,
JSON round trip, and its place in the postprocessing chain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uadnet.postprocessing import Postprocessing, apply_postprocessing, decide_postprocessing
from uadnet.postprocessing.intensity_novelty import IntensityNovelty, fit_intensity_novelty, leave_one_out


def _healthy(seed: int, channels: int = 1, shape: tuple[int, int, int] = (1, 40, 40)) -> np.ndarray:
    """Tissue of two kinds (0.3 and 0.6) with noise, a ring of background (0) around it."""
    rng = np.random.default_rng(seed)
    image = np.zeros((channels, *shape), np.float32)
    image[:, :, 5:35, 5:20] = 0.3
    image[:, :, 5:35, 20:35] = 0.6
    image[:, :, 5:35, 5:35] += rng.normal(0, 0.02, (channels, shape[0], 30, 30)).astype(np.float32)
    return image


def _fit(channels: int = 1, n: int = 4):
    images = [_healthy(i, channels) for i in range(n)]
    fgs = [im[0] > 0.1 for im in images]
    maps = [np.where(f, 1.0, 0.0).astype(np.float32) for f in fgs]
    fitted = fit_intensity_novelty(images, fgs, maps, 0.99)
    assert fitted is not None
    return images, fgs, fitted


def test_rare_and_unseen_intensities_score_common_ones_do_not():
    images, fgs, (novelty, loo) = _fit()
    assert novelty.weight == 0 and len(loo) == len(images) and all(n.weight == 1 for n in loo)
    case = images[0].copy()
    case[0, 0, 10, 10] = 0.95  # brighter than any healthy voxel
    case[0, 0, 12, 12] = 0.45  # between the two tissues: never seen either
    case[0, 0, 14, 14] = 0.36  # three noise σ above the darker tissue: rare
    term = novelty.with_weight(1.0).term(case)
    assert term[0, 10, 10] == term[0, 12, 12] > term[0, 14, 14] > 0  # unseen is the most novel
    common = fgs[0] & (np.abs(case[0] - 0.3) < 0.02) | fgs[0] & (np.abs(case[0] - 0.6) < 0.02)
    assert common.sum() > 500 and term[common].max() == 0.0  # as common as healthy tissue: nothing added
    assert np.all(novelty.term(case) == 0)  # weight 0: no term


def test_leave_one_out_judges_healthy_cases_by_the_others():
    images, fgs, (novelty, loo) = _fit()
    own = [np.quantile(novelty.novelty(im)[f], 0.999) for im, f in zip(images, fgs)]
    held_out = [np.quantile(n.novelty(im)[f], 0.999) for n, im, f in zip(loo, images, fgs)]
    assert all(h >= o for h, o in zip(held_out, own)) and any(h > o for h, o in zip(held_out, own))
    # the normaliser is the 99th percentile of the leave-one-out novelty of healthy foreground voxels
    pooled = np.concatenate([n.novelty(im)[f] for n, im, f in zip(loo, images, fgs)])
    assert novelty.normaliser == pytest.approx(float(np.quantile(pooled, 0.99)), rel=1e-6)
    assert novelty.scale == pytest.approx(1.0)  # the 99th percentile of the healthy maps (all 1 in the foreground)


def test_colour_joint_histogram_and_its_limits():
    images, fgs, (novelty, _) = _fit(channels=3)
    assert novelty.bins == 16 and len(novelty.log_density) == 16 ** 3
    case = images[0].copy()
    case[:, 0, 10, 10] = (0.3, 0.6, 0.3)  # each channel's value is common, the colour is not
    assert novelty.with_weight(1.0).term(case)[0, 10, 10] > 0
    with pytest.raises(ValueError, match="fitted on 3 channel"):
        novelty.novelty(images[0][:1])
    four = [_healthy(i, 4) for i in range(3)]
    assert fit_intensity_novelty(four, [f[0] > 0.1 for f in four], [f[0] for f in four], 0.99) is None
    assert fit_intensity_novelty(images[:1], fgs[:1], [f.astype(np.float32) for f in fgs[:1]], 0.99) is None


def test_validation_choice_keeps_it_only_where_it_finds_anomalies():
    """A restorer blind to small bright spots (its map is flat noise): the validation choice adds the term when the
    validation anomalies are such spots, and leaves it out when they are only in-range changes."""
    images, fgs, (novelty, loo) = _fit()
    rng = np.random.default_rng(5)
    maps = [np.where(f, rng.uniform(0, 1, f.shape), 0).astype(np.float32) for f in fgs]

    def choose(value: float):
        labels, units = [], []
        for n, im, f in zip(loo, images, fgs):
            case, label = im.copy(), np.zeros(f.shape, bool)
            label[0, 8:11, 8:11] = True
            case[0][label] = value
            labels.append(label)
            units.append(n.term(case))
        pp, trials = decide_postprocessing(maps, labels, fgs, [(1.0, 1.0, 1.0)] * 4, True,
                                           component_threshold=0.99, novelty=novelty, novelty_units=units)
        return pp, trials

    pp, trials = choose(0.95)
    assert pp.intensity_novelty is not None and pp.intensity_novelty.weight in (1.0, 2.0, 4.0)
    assert [t["step"] for t in trials[-3:]] == ["intensity_novelty_1", "intensity_novelty_2", "intensity_novelty_4"]
    assert all(set(t["ap_per_class"]) == {"1"} and t["ap"] == t["ap_per_class"]["1"] for t in trials)  # one class
    pp, _ = choose(0.6)  # the spot has the other tissue's intensity: nothing to gain
    assert pp.intensity_novelty is None


def test_round_trip_through_json_and_the_chain():
    images, fgs, (novelty, _) = _fit()
    pp = Postprocessing(foreground_mask=True, intensity_novelty=novelty.with_weight(2.0))
    again = Postprocessing.from_dict(json.loads(json.dumps(pp.to_dict())))
    assert again == pp and isinstance(again.intensity_novelty, IntensityNovelty)
    assert Postprocessing.from_dict({"foreground_mask": True}).intensity_novelty is None  # files before it
    summary = again.summary()["intensity_novelty"]  # what prediction.json records: no density table
    assert "log_density" not in summary and summary["weight"] == 2.0 and summary["bins"] == novelty.bins
    case = images[1].copy()
    case[0, 0, 20, 20] = 0.95
    case[0, 0, 1, 1] = 0.95  # same value in the background: not tissue, no term
    score = np.zeros(case.shape[1:], np.float32)
    out = apply_postprocessing(score, fgs[1], (1, 1, 1), again, image=case)
    assert out[0, 20, 20] == pytest.approx(float(again.intensity_novelty.term(case)[0, 20, 20])) and out[0, 20, 20] > 0
    assert out[0, 1, 1] == 0
    with pytest.raises(ValueError, match="pass the preprocessed image"):
        apply_postprocessing(score, fgs[1], (1, 1, 1), again)
    with pytest.raises(ValueError, match="normaliser and scale"):
        IntensityNovelty((0.0,), (1.0,), 2, (0.0, 0.0), 0.0, 1.0, 0.99)


def test_recalibration_rebuilds_the_held_out_histograms_training_used():
    """``uadnet_ensemble --recalibrate`` and ``uadnet_find_best_configuration`` rebuild each validation case's
    held-out histogram from the stored fit: the same tables, so the same healthy maps and thresholds."""
    images, fgs, (novelty, loo) = _fit(channels=2)
    rebuilt = leave_one_out(novelty.with_weight(4.0), images, fgs)
    assert rebuilt == loo
    stored = IntensityNovelty.from_dict(json.loads(json.dumps(novelty.with_weight(4.0).to_dict())))
    assert leave_one_out(stored, images, fgs) == loo
