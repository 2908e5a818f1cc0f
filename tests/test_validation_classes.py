"""Validation weighs small anomalies as much as large ones: the class-balanced AP (exact values on a hand-made
case), small "many tasks" anomalies sized in mm, and a postprocessing choice that no longer erases them."""

from __future__ import annotations

import numpy as np
import pytest

from uadnet.corruption.many_tasks import ManyTasks
from uadnet.postprocessing.postprocessing import apply_postprocessing, decide_postprocessing
from uadnet.scoring.average_precision import class_aps, class_balanced_ap, pooled_ap


def test_class_balanced_ap_exact_values():
    scores = [np.array([0.9, 0.8, 0.7], np.float32), np.array([0.6, 0.5, 0.4], np.float32)]
    labels = [np.array([1, 0, 2], np.uint8), np.array([0, 1, 0], np.uint8)]
    # class 1 against healthy: 0.9 (+), 0.8, 0.6, 0.5 (+), 0.4 -> AP = 1/2 * 1 + 1/2 * 2/4 = 0.75
    # class 2 against healthy: 0.8, 0.7 (+), 0.6, 0.4 -> AP = 1/2
    assert class_aps(scores, labels) == pytest.approx({1: 0.75, 2: 0.5})
    assert class_balanced_ap(scores, labels) == pytest.approx(0.625)
    # all anomalies as one class: hits at ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3
    as_one = [lab > 0 for lab in labels]
    assert pooled_ap(scores, as_one) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert class_balanced_ap(scores, as_one) == pytest.approx(pooled_ap(scores, as_one))
    # only class 2 labelled: the former class-1 voxels are healthy, 0.9 and 0.8 rank above the spot -> 1/3
    assert class_balanced_ap(scores, [np.where(lab == 2, 2, 0) for lab in labels]) == pytest.approx(1 / 3)
    assert class_balanced_ap(scores, [np.zeros(3, np.uint8)] * 2) is None


def test_small_anomalies_sized_in_mm():
    image = np.full((1, 40, 40, 40), 0.5, np.float32)
    fg = np.ones((40, 40, 40), bool)
    hi = 8.0
    tasks = ManyTasks(["fractal_intensity"], max_anomalies=1, clean_fraction=0.0, size_mm=[4.0, hi])
    for seed in range(20):
        out = tasks(image, fg, np.random.default_rng(seed), spacing=(1.0, 2.0, 2.0))
        changed = np.argwhere(np.abs(out.image - image)[0] > 0)
        assert changed.size
        extent_mm = (np.ptp(changed, axis=0) + 1) * np.array([1.0, 2.0, 2.0])
        assert (extent_mm <= hi + 3 * np.array([1.0, 2.0, 2.0])).all()  # the shape's box plus its 3-voxel margin
    with pytest.raises(ValueError, match="size_mm"):
        ManyTasks(size_mm=[5.0, 2.0])


def test_the_choice_keeps_small_anomalies_that_pooled_ap_would_erase():
    """Large squares of a weak residual and single-voxel spots of a strong one: smoothing wins on the pooled AP
    (the squares have most voxels) and halves the spots' AP; weighed by class, the maps stay unsmoothed."""
    rng = np.random.default_rng(0)
    scores, labels, fgs = [], [], []
    for i in range(3):
        label = np.zeros((1, 48, 48), np.uint8)
        label[0, 8:20, 8 + 4 * i:20 + 4 * i] = 1
        score = np.abs(rng.normal(0.0, 0.05, label.shape)) + 0.12 * (label == 1)
        for y, x in [(30, 30), (36, 12), (40, 40), (28, 42)]:
            label[0, y, x], score[0, y, x] = 2, 0.4
        scores.append(score.astype(np.float32))
        labels.append(label)
        fgs.append(np.ones_like(label, bool))
    small = {}
    for name, labs in (("pooled", [lab > 0 for lab in labels]), ("by class", labels)):
        pp, _ = decide_postprocessing(scores, labs, fgs, [(1.0, 1.0, 1.0)] * 3, in_plane_only=True,
                                      component_threshold=0.2)
        done = [apply_postprocessing(s, f, (1.0, 1.0, 1.0), pp, True) for s, f in zip(scores, fgs)]
        small[name] = (pp.gaussian_sigma_mm, class_aps(done, labels))
    assert small["pooled"][0] is not None and small["by class"][0] is None
    assert small["by class"][1][2] == pytest.approx(1.0) and small["pooled"][1][2] < 0.9
    assert small["pooled"][1][1] > small["by class"][1][1]  # what the pooled choice bought: the squares
