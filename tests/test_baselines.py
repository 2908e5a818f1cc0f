"""Training-free baselines (intensity thresholding, voxel-wise z-score): exact values on hand-made arrays, the
one-grid check, calibration quantiles, and an end-to-end run on the tiny demo dataset that uadnet_evaluate scores."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import make_dataset, uadnet_folders
from uadnet.baselines import (
    STD_FLOOR,
    BaselineError,
    calibrate_baseline,
    channel_signs,
    check_grid,
    fit_zscore,
    intensity_score,
    zscore_map,
)
from uadnet.baselines.common import without_clipping
from uadnet.baselines.zscore import load_statistics, normalize_on_input_grid
from uadnet.cli.baseline import main as baseline_main

QUIET = ["--disable_progress_bar"]


# ------------------------------------------------------------------------------------------ pure functions
def test_channel_signs_from_names():
    np.testing.assert_array_equal(channel_signs(["T1", "FLAIR", "T2", "T1ce", "t1_native"]), [-1, 1, 1, 1, -1])


def test_intensity_score_is_the_bright_channel_inside_the_foreground():
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 1, (2, 2, 3, 4)).astype(np.float32)  # (c, z, y, x): T1, FLAIR
    fg = np.zeros((2, 3, 4), bool)
    fg[:, 1:, 1:3] = True
    score = intensity_score(data, fg, channel_signs(["T1", "FLAIR"]))
    assert score.shape == (2, 3, 4) and score.dtype == np.float32
    np.testing.assert_array_equal(score[fg], data[1][fg])  # the FLAIR intensity, not T1's
    assert not score[~fg].any()
    both = intensity_score(data, fg, np.array([1, 1]))  # two bright channels: the brighter one
    np.testing.assert_array_equal(both[fg], np.maximum(data[0], data[1])[fg])
    dark = intensity_score(data[:1], fg, channel_signs(["T1"]))  # no bright channel: darkness 1 - x
    np.testing.assert_allclose(dark[fg], 1.0 - data[0][fg], rtol=0, atol=1e-7)
    assert not dark[~fg].any()


def test_zscore_of_a_hand_made_population():
    # three reference cases, two channels (T1, FLAIR), one row of four voxels
    population = np.array([
        [[[[0.2, 0.5, 0.5, 0.1]]], [[[0.4, 0.3, 0.6, 0.0]]]],
        [[[[0.4, 0.5, 0.7, 0.1]]], [[[0.4, 0.6, 0.6, 0.0]]]],
        [[[[0.6, 0.5, 0.9, 0.1]]], [[[0.4, 0.9, 0.6, 0.0]]]],
    ], np.float32)  # (n, c, z, y, x)
    stats = fit_zscore(iter(population))
    assert stats.num_cases == 3 and stats.std_floor == STD_FLOOR == 0.05
    np.testing.assert_allclose(stats.mean[0, 0, 0], [0.4, 0.5, 0.7, 0.1], atol=1e-6)
    np.testing.assert_allclose(stats.mean[1, 0, 0], [0.4, 0.6, 0.6, 0.0], atol=1e-6)
    sd = np.sqrt(0.08 / 3)  # deviations ±0.2 and 0 (ddof = 0)
    np.testing.assert_allclose(stats.std[0, 0, 0], [sd, 0.05, sd, 0.05], atol=1e-6)  # constant voxels: the floor
    sd_flair = np.sqrt(0.18 / 3)
    np.testing.assert_allclose(stats.std[1, 0, 0], [0.05, sd_flair, 0.05, 0.05], atol=1e-6)

    test = np.array([[[[0.1, 0.6, 0.9, 0.1]]], [[[0.5, 0.3, 0.6, 0.2]]]], np.float32)
    fg = np.array([[[True, True, True, False]]])
    score = zscore_map(test, fg, stats, channel_signs(["T1", "FLAIR"]))
    # T1 (sign -1): darker than the population counts; FLAIR (sign +1): brighter counts; max over channels, >= 0
    expected = [max((0.4 - 0.1) / sd, (0.5 - 0.4) / 0.05),  # 11.6 vs 2
                max((0.5 - 0.6) / 0.05, (0.3 - 0.6) / sd_flair, 0.0),  # T1 brighter, FLAIR darker: 0
                max((0.7 - 0.9) / sd, (0.6 - 0.6) / 0.05, 0.0),  # T1 brighter: 0
                0.0]  # outside the foreground (its FLAIR z would be 4)
    np.testing.assert_allclose(score[0, 0], expected, rtol=1e-5, atol=1e-6)
    bright_t1 = zscore_map(test, fg, stats, np.array([1, 1]))  # a T1 called hyperintense: brighter counts
    np.testing.assert_allclose(bright_t1[0, 0, 2], (0.9 - 0.7) / sd, rtol=1e-5)
    with pytest.raises(ValueError, match="one grid"):
        fit_zscore([population[0], population[1][:, :, :, :3]])


def test_grid_mismatch_names_the_file():
    sitk_props = {"dimension": 3, "spacing": [1.0, 1.0, 2.0], "origin": [0.0, 0.0, 0.0],
                  "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}
    ref = {"spacing": [2.0, 1.0, 1.0], "sitk": sitk_props}
    check_grid((4, 5, 6), ref, (4, 5, 6), ref, "b.nii.gz", "a.nii.gz")  # same grid: fine
    shifted = {"spacing": [2.0, 1.0, 1.0], "sitk": {**sitk_props, "origin": [0.0, 3.0, 0.0]}}
    with pytest.raises(BaselineError, match=r"b\.nii\.gz is not on the grid of the reference case a\.nii\.gz.*origin"
                                            r".*one \(registered\) grid"):
        check_grid((4, 5, 6), shifted, (4, 5, 6), ref, "b.nii.gz", "a.nii.gz")
    with pytest.raises(BaselineError, match=r"c\.nii\.gz .*size"):
        check_grid((4, 5, 7), ref, (4, 5, 6), ref, "c.nii.gz", "a.nii.gz")


def test_calibration_takes_the_quantiles_of_the_healthy_foreground():
    scores = np.full((1, 10, 20), 1000.0, np.float32)  # background: huge, must be ignored
    fg = np.zeros((1, 10, 20), bool)
    fg[:, :, :10] = True
    scores[fg] = np.arange(100, dtype=np.float32)
    cal = calibrate_baseline([scores], [fg])
    thresholds = cal["voxel_thresholds"]
    assert thresholds["0.01"] == pytest.approx(98.01)  # (1 - 0.01) quantile of 0..99, linear interpolation
    assert thresholds["0.05"] == pytest.approx(94.05)
    assert thresholds["0.001"] == pytest.approx(98.901)
    assert cal["achieved_false_positive_rates"]["0.01"] == pytest.approx(0.01)  # one voxel (99) of 100
    assert cal["case_threshold"] == pytest.approx(99.0)  # one case: its score, the mean of its top 1 % (= 99)
    # three cases of constant scores 1, 2, 3: case scores 1, 2, 3, 95th percentile 2.9
    cases = [np.full((1, 4, 4), v, np.float32) for v in (1.0, 2.0, 3.0)]
    cal = calibrate_baseline(cases, [np.ones((1, 4, 4), bool)] * 3)
    assert cal["case_threshold"] == pytest.approx(2.9)
    assert cal["voxel_thresholds"]["0.01"] == pytest.approx(3.0)
    assert cal["achieved_false_positive_rates"]["0.01"] == pytest.approx(1 / 3)  # ties: more than stated


# --------------------------------------------------------------------------------- the demo, end to end
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo (6 healthy training brains, 4 test brains at 4 mm), planned; the uadnet folders set."""
    pytest.importorskip("nilearn")
    from uadnet.cli.plan_and_preprocess import main as plan_main
    from uadnet.demo.builder import make_demo_dataset

    with uadnet_folders(tmp_path_factory, "baselines") as folders:
        root = folders["UADNET_RAW"].parent
        dataset = make_demo_dataset(folders["UADNET_RAW"], n_train=6, n_test=4, resolution_mm=4.0, seed=0,
                                    disable_progress_bar=True)
        assert plan_main(["-d", "990", "-c", "2d", "-np", "1", "--device", "cpu", *QUIET]) == 0
        yield {"root": root, "dataset": dataset, **folders}


@pytest.fixture
def demo_env(demo, monkeypatch):
    for var in ("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS"):
        monkeypatch.setenv(var, str(demo[var]))
    return demo


PREDICTOR_RECORD_KEYS = {"case", "score", "flagged", "voxel_threshold", "case_threshold", "anomalous_voxels",
                         "seconds", "inputs"}


@pytest.mark.parametrize("baseline", ["intensity", "zscore"])
def test_end_to_end_on_the_demo_beats_chance(demo_env, tmp_path, baseline, capsys):
    from uadnet.evaluation.evaluator import evaluate_folder

    inp, labels = demo_env["dataset"] / "imagesTs", demo_env["dataset"] / "labelsTs"
    before = {p.name: p.stat().st_mtime_ns for p in inp.iterdir()}
    out = tmp_path / baseline
    assert baseline_main(["-d", "990", "-b", baseline, "-i", str(inp), "-o", str(out), *QUIET]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in inp.iterdir()} == before  # the inputs are never written to
    assert str(out) in capsys.readouterr().out

    prediction = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    assert prediction["method"] == f"baseline_{baseline}"
    threshold = prediction["voxel_threshold"]
    assert threshold == prediction["voxel_thresholds"]["0.01"] and prediction["case_threshold"] > 0
    assert prediction["calibration"]["cases"] == ["demo_003", "demo_005"]  # fold-0 'val' of splits_final.json
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    assert [r["case"] for r in rows] == [f"test_{i:03d}" for i in range(4)]
    for case in ("test_000", "test_003"):
        record = json.loads((out / "per_case" / f"{case}.json").read_text(encoding="utf-8"))
        assert set(record) == PREDICTOR_RECORD_KEYS and record["voxel_threshold"] == threshold
        ref = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        amap_img = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert amap_img.GetSize() == ref.GetSize() and amap_img.GetOrigin() == ref.GetOrigin()
        amap = sitk.GetArrayFromImage(amap_img)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_mask.nii.gz")))
        assert amap.dtype == np.float32 and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, amap >= np.float32(threshold))
        assert record["anomalous_voxels"] == int(mask.sum())

    from uadnet.plans import Plans

    plans = without_clipping(Plans.load(demo_env["UADNET_PREPROCESSED"] / "Dataset990_DemoBrain" /
                                        "uadnet_plans.json"))
    t1, flair = (sitk.GetArrayFromImage(sitk.ReadImage(str(inp / f"test_000_{c:04d}.nii.gz"))) for c in (0, 1))
    data, fg = normalize_on_input_grid(np.stack([t1, flair]).astype(np.float32), plans)
    amap = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "test_000.nii.gz")))
    if baseline == "intensity":  # at 4 mm the 2d configuration does not resample: exactly the normalised FLAIR
        np.testing.assert_allclose(amap, np.where(fg, data[1], 0), rtol=1e-6, atol=1e-6)
    else:
        stats = load_statistics(out / "zscore_statistics.npz")
        assert stats.num_cases == 4 and stats.mean.shape == data.shape
        np.testing.assert_allclose(amap, zscore_map(data, fg, stats, np.array([-1, 1])), rtol=1e-5, atol=1e-5)

    summary = evaluate_folder(out, labels, num_bootstrap=0, disable_progress_bar=True, verbose=False)
    pooled = summary["pooled"]
    prevalence = pooled["num_positive"] / pooled["num_voxels"]
    assert pooled["num_positive"] > 0 and pooled["ap"] > prevalence, pooled
    assert summary["thresholds"]["voxel_threshold"] == threshold

    # resumable: finished cases are skipped
    first = (out / "test_000.nii.gz").stat().st_mtime_ns
    assert baseline_main(["-d", "990", "-b", baseline, "-i", str(inp), "-o", str(out), "--continue_prediction",
                          *QUIET]) == 0
    assert "4 case(s) already predicted" in capsys.readouterr().out
    assert (out / "test_000.nii.gz").stat().st_mtime_ns == first


def test_normalisation_on_the_input_grid_is_the_preprocessors(demo_env):
    from uadnet.imageio import SimpleITKIO
    from uadnet.plans import Plans
    from uadnet.preprocessing.preprocessor import preprocess_case

    plans = Plans.load(demo_env["UADNET_PREPROCESSED"] / "Dataset990_DemoBrain" / "uadnet_plans.json")
    image, props = SimpleITKIO().read_images([demo_env["dataset"] / "imagesTs" / f"test_001_{c:04d}.nii.gz"
                                              for c in (0, 1)])
    for p in (plans, without_clipping(plans)):
        pre = preprocess_case(image, props, p, "2d")  # 4 mm: cropped and normalised, not resampled
        data, fg = normalize_on_input_grid(image, p)
        inside = tuple(slice(a, b) for a, b in pre.properties["bbox"])
        assert fg.sum() == pre.foreground.sum()
        np.testing.assert_array_equal(fg[inside], pre.foreground)
        np.testing.assert_array_equal(data[(slice(None), *inside)], pre.data)
    # unclipped: the brightest voxels keep their order above the upper percentile's value (1, or high_maps_to)
    assert data.max() > max(n.high_maps_to for n in plans.normalization)


def test_zscore_refuses_a_case_off_the_reference_grid(demo_env, tmp_path, capsys):
    inp = tmp_path / "in"
    shutil.copytree(demo_env["dataset"] / "imagesTs", inp)
    for c in (0, 1):  # test_002 moved by 10 mm
        path = inp / f"test_002_{c:04d}.nii.gz"
        img = sitk.ReadImage(str(path))
        img.SetOrigin(tuple(o + 10.0 for o in img.GetOrigin()))
        sitk.WriteImage(img, str(path))
    out = tmp_path / "out"
    assert baseline_main(["-d", "990", "-b", "zscore", "-i", str(inp), "-o", str(out), *QUIET]) == 1
    text = capsys.readouterr().out
    assert "FAILED test_002" in text and "test_002_0000.nii.gz" in text and "one (registered) grid" in text
    assert (out / "test_001.nii.gz").is_file() and not (out / "test_002.nii.gz").exists()
    # the intensity baseline does not need one grid
    assert baseline_main(["-d", "990", "-b", "intensity", "-i", str(inp), "-o", str(tmp_path / "int"), *QUIET]) == 0


def test_output_inside_the_input_and_uncalibrated_rates_are_refused(demo_env, capsys):
    inp = demo_env["dataset"] / "imagesTs"
    assert baseline_main(["-d", "990", "-b", "intensity", "-i", str(inp), "-o", str(inp / "out"), *QUIET]) == 1
    assert "must not be the input folder" in capsys.readouterr().err and not (inp / "out").exists()
    assert baseline_main(["-d", "990", "-b", "zscore", "-i", str(inp), "-o", str(inp.parent / "x"), "--fpr", "0.02",
                          *QUIET]) == 1
    assert "--fpr 0.02 is not calibrated" in capsys.readouterr().err and not (inp.parent / "x").exists()


def test_unplanned_dataset_is_refused(uadnet_env, tmp_path, capsys):
    raw, _, _ = uadnet_env
    folder = make_dataset(raw, dataset_id=7, kind="3d_iso", n_cases=3, n_test=1)
    assert baseline_main(["-d", "7", "-b", "zscore", "-i", str(folder / "imagesTs"), "-o", str(tmp_path / "o"),
                          *QUIET]) == 1
    assert "uadnet_plan_and_preprocess -d 7" in capsys.readouterr().err
