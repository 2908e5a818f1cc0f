"""The demo builder at a tiny size: a valid dataset, lesions inside the brain, deterministic, resumable."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

pytest.importorskip("nilearn")

from uadnet.dataset.integrity import verify_dataset_integrity
from uadnet.demo.builder import make_demo_dataset, synthesize_case


def read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("raw"), n_train=2, n_test=4, resolution_mm=4.0, seed=3,
                             disable_progress_bar=True)


def test_valid_dataset_with_lesions_inside_the_brain(demo):
    assert verify_dataset_integrity(demo) == []
    dj = json.loads((demo / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1", "1": "FLAIR"} and dj["numTraining"] == 2
    assert dj["test_case_lesions"] == {"test_000": "tumour", "test_001": "wmh", "test_002": "infarct",
                                       "test_003": "healthy"}
    img = sitk.ReadImage(str(demo / "imagesTr" / "demo_000_0000.nii.gz"))
    assert img.GetSpacing() == (4.0, 4.0, 4.0)
    for case, kind in dj["test_case_lesions"].items():
        t1 = read(demo / "imagesTs" / f"{case}_0000.nii.gz")
        label = read(demo / "labelsTs" / f"{case}.nii.gz").astype(bool)
        if kind == "healthy":
            assert not label.any()
            continue
        assert label.any()
        assert (t1[label] > 0).all()  # inside the (nonzero) brain


def test_lesions_change_intensities_where_labelled():
    healthy, mask, _, _ = synthesize_case(4.0, 3, "Ts", 0, None)
    for lesion in range(3):
        images, _, label, kind = synthesize_case(4.0, 3, "Ts", 0, lesion)
        flair_ratio = images["FLAIR"][label].mean() / healthy["FLAIR"][label].mean()
        assert abs(flair_ratio - 1) > 0.1, kind  # the lesion is visible on FLAIR
        assert not (label & ~mask).any()
        if kind != "tumour":  # outside the label exactly the healthy case (the tumour's mass effect moves tissue)
            for c in images:
                np.testing.assert_array_equal(images[c][~label], healthy[c][~label])
        else:
            far = ~ndimage.binary_dilation(label, iterations=10)
            np.testing.assert_allclose(images["T1"][far], healthy["T1"][far], rtol=1e-3)  # mass effect fades


def test_deterministic_and_resumable(demo, tmp_path):
    a, _, _, _ = synthesize_case(4.0, 3, "Tr", 1, None)
    b, _, _, _ = synthesize_case(4.0, 3, "Tr", 1, None)
    c, _, _, _ = synthesize_case(4.0, 4, "Tr", 1, None)
    np.testing.assert_array_equal(a["T1"], b["T1"])
    assert not np.array_equal(a["T1"], c["T1"])
    np.testing.assert_array_equal(read(demo / "imagesTr" / "demo_001_0000.nii.gz"), a["T1"])
    f = demo / "imagesTs" / "test_002_0001.nii.gz"
    before = os.stat(f).st_mtime_ns
    (demo / "labelsTs" / "test_001.nii.gz").unlink()  # an interrupted build
    lesions = json.loads((demo / "dataset.json").read_text())["test_case_lesions"]
    make_demo_dataset(demo.parent, n_train=2, n_test=4, resolution_mm=4.0, seed=3, disable_progress_bar=True)
    assert os.stat(f).st_mtime_ns == before
    assert (demo / "labelsTs" / "test_001.nii.gz").is_file()
    make_demo_dataset(demo.parent, n_train=2, n_test=4, resolution_mm=4.0, seed=3, disable_progress_bar=True)
    assert json.loads((demo / "dataset.json").read_text())["test_case_lesions"] == lesions  # all cases skipped
    assert os.stat(f).st_mtime_ns == before
    with pytest.raises(ValueError, match="another"):  # another seed into the same folder is refused
        make_demo_dataset(demo.parent, n_train=2, n_test=4, resolution_mm=4.0, seed=4, disable_progress_bar=True)


def test_smaller_rebuild_drops_extra_cases_and_cli(tmp_path, capsys):
    from uadnet.cli.make_demo_dataset import main

    assert main(["--n_train", "2", "--n_test", "2", "--resolution", "6", "-np", "1", "-o", str(tmp_path),
                 "--disable_progress_bar"]) == 0
    folder = tmp_path / "Dataset990_DemoBrain"
    assert "uadnet_plan_and_preprocess -d 990" in capsys.readouterr().out
    make_demo_dataset(tmp_path, n_train=1, n_test=1, resolution_mm=6.0, seed=0, disable_progress_bar=True)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["demo_000_0000.nii.gz", "demo_000_0001.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["test_000.nii.gz"]
    assert verify_dataset_integrity(folder) == []
