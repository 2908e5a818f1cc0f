"""The development datasets: valid, built differently from the demo, lesions exactly where labelled and sized as
stated, deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.io

from uadnet.dataset.integrity import verify_dataset_integrity
from uadnet.demo.development import make_development_dataset, synthesize_brain, synthesize_photo
from uadnet.evaluation.lesion_wise import case_lesions

KINDS_PHOTO = {"test_000": "small", "test_001": "exudate", "test_002": "subtle", "test_003": "healthy"}
KINDS_BRAIN = {"test_000": "small", "test_001": "subtle", "test_002": "large", "test_003": "healthy"}


def test_dev_photo_dataset(tmp_path):
    folder = make_development_dataset("dev_photo", tmp_path, n_train=2, n_test=4, disable_progress_bar=True)
    assert folder.name == "Dataset992_DevRetina2D"
    assert verify_dataset_integrity(folder) == []
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "R", "1": "G", "2": "B"} and dj["test_case_lesions"] == KINDS_PHOTO
    for case, kind in KINDS_PHOTO.items():
        label = skimage.io.imread(folder / "labelsTs" / f"{case}.png") > 0
        image = np.stack([skimage.io.imread(folder / "imagesTs" / f"{case}_{c:04d}.png") for c in range(3)], -1)
        assert image.shape == (256, 256, 3) and label.shape == (256, 256)
        healthy, _ = synthesize_photo(0, "Ts", int(case[-1]), "healthy")
        changed = (image != healthy).any(-1)
        assert not (changed & ~label).any()  # the lesion changes nothing outside its label
        if kind == "healthy":
            assert not label.any()
            continue
        assert changed[label].mean() > 0.5
        diameters = case_lesions(np.zeros((1, 256, 256), np.float32), label[None], (1.0, 1.0, 1.0), None).diameters_mm
        bounds = {"small": (2.0, 9.5), "exudate": (5.0, 45.0), "subtle": (20.0, 80.0)}[kind]  # blobs may merge
        assert bounds[0] <= diameters.min() and diameters.max() <= bounds[1], (kind, diameters)
    # deterministic
    again, _lab = synthesize_photo(0, "Ts", 0, "small")
    assert np.array_equal(again[..., 1], skimage.io.imread(folder / "imagesTs" / "test_000_0001.png"))


def test_dev_brain_single_channel_coronal_with_small_and_subtle_lesions():
    pytest.importorskip("nilearn")
    from uadnet.demo.anatomy import load_template

    tpl = load_template(2.0)
    for index, kind in enumerate(KINDS_BRAIN.values()):
        image, _mask, label = synthesize_brain(0, "Ts", index, kind, 2.0)
        healthy, _, _ = synthesize_brain(0, "Ts", index, "healthy", 2.0)
        z, y, x = tpl.t1.shape
        assert image.shape == (y, z, x)  # coronal slices along the first axis
        assert not (image != healthy)[~label].any()
        if kind == "healthy":
            assert not label.any()
            continue
        ratio = image[label] / np.maximum(healthy[label], 1e-3)
        core = np.median(np.abs(ratio - 1))
        lo, hi = {"small": (0.2, 0.75), "subtle": (0.05, 0.21), "large": (0.2, 0.65)}[kind]
        assert lo <= core <= hi, (kind, core)
        d = case_lesions(np.zeros(label.shape, np.float32), label, (2.0, 2.0, 2.0), None).diameters_mm
        if kind == "small":
            assert len(d) >= 1 and d.max() <= 8.0  # 3-5 mm spots: one to a few 2 mm voxels each
        else:
            assert d.max() >= 8.0
