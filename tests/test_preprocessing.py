"""Preprocessing: normalisation, foreground, and the exact geometric round trip through the inverse."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import make_dataset, write_sitk
from uadnet.dataset.raw_dataset import RawDataset
from uadnet.planning.fingerprint import extract_fingerprint
from uadnet.planning.hardware import HardwareInfo
from uadnet.planning.planner import plan_experiment
from uadnet.plans import NormalizationPlan
from uadnet.preprocessing.foreground import compute_foreground
from uadnet.preprocessing.normalization import normalization_scheme_for, normalize
from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing

CPU = HardwareInfo(device="cpu", bf16=False, gflops=100)


def plan_for(folder):
    ds = RawDataset(folder)
    return ds, plan_experiment(extract_fingerprint(ds, 1, disable_progress_bar=True), CPU)


def test_percentile_ct_rgb_normalisation_exact_values():
    img = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    fg = np.ones((1, 10, 10), bool)
    fg[0, 0, :5] = False  # background voxels: excluded from percentiles, set to 0
    out, ranges = normalize(img, fg, [NormalizationPlan("T2", "percentile", 0.0, 50.0)])
    values = img[0][fg]
    lo, hi = values.min(), np.percentile(values, 50)
    assert ranges == [[lo, hi]]
    np.testing.assert_allclose(out[0][fg], np.clip((values - lo) / (hi - lo), 0, 1), rtol=1e-6)
    assert (out[0][~fg] == 0).all()
    ct, _ = normalize(img - 50, np.ones((1, 10, 10), bool), [NormalizationPlan("CT", "ct", low=-10, high=10)])
    assert ct.min() == 0 and ct.max() == 1 and ct[0, 0, 5, 0] == pytest.approx(0.5)
    rgb, _ = normalize(np.full((1, 1, 2, 2), 51, np.float32), np.ones((1, 2, 2), bool), [NormalizationPlan("R", "rgb")])
    assert np.allclose(rgb, 0.2)


def test_headroom_keeps_intensities_above_the_upper_percentile_distinct():
    img = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    fg = np.ones((1, 10, 10), bool)
    plan = NormalizationPlan("FLAIR", "percentile", 0.0, 50.0, high_maps_to=0.5)
    out, ranges = normalize(img, fg, [plan])
    p50 = np.percentile(img, 50)
    assert ranges == [[0.0, pytest.approx(2 * p50)]]  # the range stored for inversion includes the headroom
    np.testing.assert_allclose(out[0].ravel(), np.clip(img.ravel() / p50 * 0.5, 0, 1), rtol=1e-6)
    assert out[0, 0, 7, 0] == pytest.approx(70 / p50 * 0.5) and out.max() == 1.0  # above p50: distinct until 2·p50
    with pytest.raises(ValueError, match="high_maps_to"):
        normalize(img, fg, [NormalizationPlan("FLAIR", "percentile", high_maps_to=0.0)])


def test_scheme_from_channel_name():
    for name in ("CT", "ct", "CTA", "NCCT", "CECT", "CT_venous", "low-dose CT"):
        assert normalization_scheme_for(name, ".nii.gz") == "ct", name
    for name in ("T1", "FLAIR", "DWI", "CBCT", "octopus", "Doctor"):
        assert normalization_scheme_for(name, ".nii.gz") == "percentile", name
    assert normalization_scheme_for("R", ".nii.gz") == "rgb"
    assert normalization_scheme_for("grey", ".png") == "rgb"
    assert normalization_scheme_for("grey", ".png", max_intensity=4095) == "percentile"  # 16-bit photo format


def test_foreground_methods():
    img = np.zeros((1, 4, 20, 20), np.float32)
    img[:, :, 5:15, 5:15] = 1.0
    img[:, 1:3, 9:11, 9:11] = 0.0  # an enclosed hole: filled
    fg = compute_foreground(img, "nonzero")
    assert fg.sum() == 4 * 100
    ct = np.full((1, 4, 20, 20), -1000.0, np.float32)
    ct[:, :, 2:12, 3:13] = 40.0
    ct[:, 0, 0, 0] = 40.0  # a speck outside the body: dropped as a small component
    fg = compute_foreground(ct, "otsu")
    assert fg.sum() == 4 * 100 and not fg[0, 0, 0]
    mask = np.zeros((1, 4, 20, 20))
    mask[0, 1] = 1
    assert compute_foreground(img, "mask", mask).sum() == 400


@pytest.mark.parametrize("kind", ["3d_iso", "3d_aniso", "2ch", "2d_png", "rgb_png"])
def test_geometry_round_trips_exactly(tmp_path, kind):
    folder = make_dataset(tmp_path, kind=kind, n_cases=3)
    ds, plans = plan_for(folder)
    reader = ds.reader_writer()
    case = next(iter(ds.training_cases().values()))
    image, props = reader.read_images(case.images)
    for cfg in plans.configurations:
        pre = preprocess_case(image, props, plans, cfg)
        assert pre.data.shape[0] == image.shape[0] and pre.data.dtype == np.float32
        assert 0 <= pre.data.min() and pre.data.max() <= 1
        assert pre.foreground.shape == pre.data.shape[1:]
        back = revert_preprocessing(pre.data, pre.properties, plans)
        assert back.shape == image.shape
        # the map written with the reader lands on exactly the input grid
        out = tmp_path / f"map_{cfg}{reader.output_file_ending(ds.file_ending)}"
        reader.write(back[0], out, props)
        again, props2 = reader.read_images([out])
        assert again.shape == (1, *image.shape[1:])
        assert props2["spacing"] == pytest.approx(props["spacing"], rel=1e-6)
        if "sitk" in props:
            for key in ("size", "origin", "direction"):
                assert props2["sitk"][key] == pytest.approx(props["sitk"][key], abs=1e-5)
        # values come back where there is foreground (interpolation error only when resampled)
        reference = normalize(image, image.max(0) > 0, plans.normalization)[0]
        inside = back[0] > 0.05
        err = np.abs(back[:, inside] - reference[:, inside]).mean()
        resampled = pre.properties["shape_after_resampling"] != pre.properties["shape_after_crop"]
        assert err < (0.1 if resampled else 1e-6), (cfg, err)


def test_transposed_anisotropic_case_round_trips_voxel_exactly(tmp_path):
    """Coarse axis stored last: preprocessing puts it first, the inverse puts every voxel back."""
    folder = tmp_path / "Dataset001_aniso"
    (folder / "imagesTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        arr = np.zeros((40, 36, 6), np.float32)  # (z, y, x) with 5 mm along x
        arr[5:35, 6:30, 1:5] = rng.uniform(10, 20, size=(30, 24, 4))
        write_sitk(arr, folder / "imagesTr" / f"c{i}_0000.nii.gz", (0.8, 0.8, 5.0))
    from uadnet.dataset.dataset_json import generate_dataset_json
    generate_dataset_json(folder, {0: "T2"}, ".nii.gz", 3)
    ds, plans = plan_for(folder)
    assert plans.transpose_forward == [2, 0, 1]
    reader = ds.reader_writer()
    image, props = reader.read_images([folder / "imagesTr" / "c0_0000.nii.gz"])
    pre = preprocess_case(image, props, plans, "2d")
    assert pre.data.shape[1] == 4  # slices along the former x axis, cropped to the foreground
    assert pre.properties["shape_after_resampling"] == pre.properties["shape_after_crop"]
    back = revert_preprocessing(pre.data, pre.properties, plans)
    expected = normalize(image, image[0] > 0, plans.normalization)[0]
    np.testing.assert_allclose(back, expected, atol=1e-6)


def test_mask_from_masks_folder_is_used(tmp_path):
    folder = make_dataset(tmp_path, kind="3d_iso", n_cases=2)
    (folder / "masksTr").mkdir()
    for f in sorted((folder / "imagesTr").iterdir()):
        img = sitk.ReadImage(str(f))
        mask = np.zeros(sitk.GetArrayFromImage(img).shape, np.uint8)
        mask[8:16, 10:20, 9:19] = 1
        m = sitk.GetImageFromArray(mask)
        m.CopyInformation(img)
        sitk.WriteImage(m, str(folder / "masksTr" / f.name.replace("_0000", "")))
    ds, plans = plan_for(folder)
    case = next(iter(ds.training_cases().values()))
    reader = ds.reader_writer()
    image, props = reader.read_images(case.images)
    pre = preprocess_case(image, props, plans, "3d", reader.read_seg(case.mask)[0])
    assert pre.properties["foreground_method"] == "mask"
    assert pre.properties["bbox"] == [[8, 16], [10, 20], [9, 19]]
    assert pre.foreground.all()
