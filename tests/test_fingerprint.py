"""Fingerprint values on hand-made data where the answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import write_sitk
from uadnet.dataset.dataset_json import generate_dataset_json
from uadnet.dataset.raw_dataset import RawDataset
from uadnet.planning.fingerprint import HISTOGRAM_BINS, extract_fingerprint
from uadnet.planning.planner import intensity_codebook


def test_fingerprint_geometry_and_intensities(tmp_path):
    folder = tmp_path / "Dataset001_Boxes"
    (folder / "imagesTr").mkdir(parents=True)
    values = []
    for i, (lo, hi) in enumerate([(10, 20), (30, 40)]):
        arr = np.zeros((10, 20, 30), np.float32)  # (z, y, x), spacing (2, 1, 0.5) mm
        box = np.linspace(lo, hi, 4 * 10 * 12, dtype=np.float32).reshape(4, 10, 12)
        arr[2:6, 5:15, 10:22] = box
        values.append(box.ravel())
        write_sitk(arr, folder / "imagesTr" / f"c{i}_0000.nii.gz", (2.0, 1.0, 0.5))
    generate_dataset_json(folder, {0: "T2"}, ".nii.gz", 2)
    fp = extract_fingerprint(RawDataset(folder), 1, num_samples=100_000, disable_progress_bar=True)
    allv = np.concatenate(values).astype(np.float64)
    assert fp["num_cases"] == 2 and not fp["is_2d"]
    assert fp["median_spacing"] == pytest.approx([2.0, 1.0, 0.5])
    assert fp["median_shape_after_crop"] == [4, 10, 12]
    assert fp["median_foreground_extent_mm"] == pytest.approx([8.0, 10.0, 6.0])
    assert fp["median_foreground_fraction"] == pytest.approx(480 / 6000)
    assert fp["cases"][0]["foreground_method"] == "nonzero"
    stats = fp["intensity_statistics"]["0"]
    assert stats["mean"] == pytest.approx(allv.mean(), rel=1e-6)
    assert stats["std"] == pytest.approx(allv.std(), rel=1e-4)
    assert (stats["min"], stats["max"]) == pytest.approx((10, 40))
    assert stats["percentile_99_5"] == pytest.approx(np.percentile(allv, 99.5), rel=1e-6)
    # per-image [0, 98] percentile scaling maps both boxes onto the same ramp 0 .. 1.02 (clipped at 1): the same
    # histogram for both; the "ct" one uses the dataset's 0.5 / 99.5 percentiles, so the two boxes fall apart
    hists = fp["normalized_histograms"]["0"]
    assert sorted(hists) == ["ct", "percentile", "rgb"] and all(len(h) == HISTOGRAM_BINS for h in hists.values())
    assert sum(hists["percentile"]) == sum(hists["ct"]) == allv.size
    pct = np.asarray(hists["percentile"])
    ramp = np.clip((np.linspace(0, 1, 480) * 10) / (0.98 * 10), 0, 1)  # one box normalised by its own 0/98 %
    expected = 2 * np.histogram(ramp, HISTOGRAM_BINS, (0, 1))[0]
    assert np.abs(pct - expected).sum() <= 0.02 * allv.size
    ct = np.asarray(hists["ct"])
    assert ct[: HISTOGRAM_BINS // 3].sum() == pytest.approx(480, abs=10)  # the darker box in the lower third
    assert ct[2 * HISTOGRAM_BINS // 3:].sum() == pytest.approx(480, abs=10)


def test_codebook_finds_tissue_classes():
    rng = np.random.default_rng(0)
    classes = np.array([0.15, 0.5, 0.85])
    values = rng.choice(classes, 3000) + rng.normal(0, 0.01, 3000)
    histogram = np.histogram(values, HISTOGRAM_BINS, (0, 1))[0]
    assert intensity_codebook(histogram, 3) == pytest.approx(classes, abs=0.01)
    assert len(intensity_codebook(histogram, "auto")) == 3
    two = np.histogram([0.0, 1.0, 1.0, 0.0], HISTOGRAM_BINS, (0, 1))[0]
    assert intensity_codebook(two, 5) == pytest.approx([0.5 / HISTOGRAM_BINS, 1 - 0.5 / HISTOGRAM_BINS], abs=1e-6)
