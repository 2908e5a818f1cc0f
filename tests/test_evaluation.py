"""Evaluation: metric values (hand-computed and against scikit-learn), bootstrap, and uadnet_evaluate end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import skimage.io
from sklearn.metrics import average_precision_score, roc_auc_score

from uadnet.cli.evaluate import main
from uadnet.evaluation import metrics
from uadnet.evaluation.evaluator import EvaluationError, evaluate_folder, known_endings, list_cases, split_ending
from uadnet.scoring.average_precision import class_aps

SPACING = (0.8, 0.8, 3.0)  # SimpleITK order (x, y, z): anisotropic
ORIGIN = (10.0, -20.0, 5.0)


def brute_force_best_dice(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    best, best_t = -1.0, None
    for t in np.unique(s):
        p = s >= t
        tp, fp, fn = (p & y).sum(), (p & ~y).sum(), (~p & y).sum()
        d = 2 * tp / (2 * tp + fp + fn)
        if d > best:
            best, best_t = d, t
    return float(best), float(best_t)


def write_nifti(arr: np.ndarray, path: Path, spacing=SPACING, origin=ORIGIN) -> None:
    img = sitk.GetImageFromArray(arr)  # arr is (z, y, x)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def strict_json(path: Path) -> dict:
    def refuse(const: str):
        raise AssertionError(f"{path} contains {const}")
    return json.loads(path.read_text(), parse_constant=refuse)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


# ---------------------------------------------------------------- metrics

def test_hand_computed_ap_auroc():
    s, y = np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])
    assert metrics.average_precision(s, y) == pytest.approx((1 + 2 / 3) / 2, rel=1e-12)
    assert metrics.auroc(s, y) == pytest.approx(0.75, rel=1e-12)
    # thresholds 0.9 (P=1, R=.5: 2/3), 0.8 (P=.5, R=.5: .5), 0.7 (P=2/3, R=1: .8), 0.1 (P=.5, R=1: 2/3)
    assert metrics.best_dice(s, y) == (pytest.approx(0.8), pytest.approx(0.7))


def test_undefined_metrics_are_none():
    s = np.array([0.3, 0.2, 0.9])
    assert metrics.average_precision(s, np.zeros(3)) is None
    assert metrics.auroc(s, np.zeros(3)) is None
    assert metrics.auroc(s, np.ones(3)) is None
    assert metrics.average_precision(s, np.ones(3)) == pytest.approx(1.0)
    assert metrics.best_dice(s, np.zeros(3)) == (None, None)
    assert metrics.dice_at_threshold(s, np.zeros(3), 0.5) is None
    m = metrics.case_metrics(s, np.zeros(3), 0.25)
    assert m["ap"] is None and m["dice_at_threshold"] is None and m["recall_at_threshold"] is None
    assert m["fp_fraction_at_threshold"] == pytest.approx(2 / 3) and m["precision_at_threshold"] == 0.0


@pytest.mark.parametrize("kind", ["distinct", "ties", "background"])
def test_matches_sklearn_on_random_data(kind):
    """The one-sort ranking curve gives scikit-learn's AP and AUROC: distinct scores, many ties, and a map that is
    mostly exact zeros (background) with positives among them."""
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.1
    s = (rng.normal(size=5000) + 1.5 * y).astype(np.float32)
    if kind == "ties":
        s = np.round(s * 2) / 2
    if kind == "background":
        s[rng.random(5000) < 0.7] = 0.0
    assert metrics.average_precision(s, y) == pytest.approx(average_precision_score(y, s), rel=1e-12)
    assert metrics.auroc(s, y) == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    m = metrics.case_metrics(s, y, None)
    assert (m["ap"], m["auroc"]) == (metrics.average_precision(s, y), metrics.auroc(s, y))
    labels = np.where(y, rng.integers(1, 3, 5000), 0)  # two classes: each against the healthy voxels
    aps = class_aps([s], [labels])
    for c in (1, 2):
        keep = labels != 3 - c
        assert aps[c] == pytest.approx(average_precision_score(labels[keep] == c, s[keep]), rel=1e-12)
    s[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc(s, y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_dice_reaches_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.2
    s = np.round(rng.normal(size=400) + 1.2 * y, 1)  # rounding makes many ties
    d, t = metrics.best_dice(s, y)
    d_ref, t_ref = brute_force_best_dice(s, y)
    assert d == pytest.approx(d_ref, rel=1e-12)
    assert metrics.dice_at_threshold(s, y, t) == pytest.approx(d_ref, rel=1e-12)
    assert t == pytest.approx(t_ref)


def test_best_dice_hand_made():
    # the optimum needs a threshold in the middle of the range, not the largest label value or score
    s = np.array([0.95, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2])
    y = np.array([0, 1, 1, 1, 0, 1, 0], bool)
    # t=.5: TP 3, FP 1, FN 1 -> 6/8; t=.3: TP 4, FP 2, FN 0 -> 8/10 (best); t=.55: TP 2, FP 1, FN 2 -> 4/7
    assert metrics.best_dice(s, y) == (pytest.approx(0.8), pytest.approx(0.3))
    assert brute_force_best_dice(s, y) == (pytest.approx(0.8), pytest.approx(0.3))


def test_dice_at_threshold_exact_and_inclusive():
    s = np.array([0.2, 0.5, 0.5, 0.9])
    y = np.array([0, 1, 0, 1], bool)
    assert metrics.dice_at_threshold(s, y, 0.5) == 0.8  # >=: TP 2, FP 1, FN 0 -> 4/5
    assert metrics.confusion_at_threshold(s, y, 0.5) == {"tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert metrics.dice_at_threshold(s, y, 0.6) == pytest.approx(2 / 3)  # TP 1, FP 0, FN 1
    assert metrics.dice_precision_recall(0, 0, 3) == {"dice": 0.0, "precision": None, "recall": 0.0}


def test_threshold_compared_exactly_with_float32_scores():
    s = np.array([0.7, 0.8], np.float32)  # float32(0.7) = 0.69999999 < 0.7: not >= 0.7, though numpy's s >= 0.7 says so
    y = np.array([True, True])
    assert float(s[0]) < 0.7 and bool((s >= 0.7)[0])
    assert metrics.confusion_at_threshold(s, y, 0.7)["tp"] == 1
    assert metrics.confusion_at_threshold(s, y, float(s[0]))["tp"] == 2  # a threshold read off the scores is kept
    assert metrics.confusion_at_threshold(s.astype(np.float64), y, 0.7)["tp"] == 1


def test_pool_and_top_fraction():
    s, y = metrics.pool([np.ones((2, 2)), np.zeros(3, np.float64)], [np.ones((2, 2)), np.array([0, 2, 0])])
    assert s.dtype == np.float32 and y.dtype == bool and s.size == 7 and y.sum() == 5
    assert metrics.top_fraction_mean(np.arange(1000.0)) == pytest.approx(994.5)  # top 10
    assert metrics.top_fraction_mean(np.arange(1001.0)) == pytest.approx(995.0)  # ceil: top 11
    assert metrics.top_fraction_mean(np.array([3.0, 7.0, 1.0])) == 7.0  # at least one voxel


def test_bootstrap_ci_deterministic_and_contains_mean():
    rng = np.random.default_rng(0)
    values = list(rng.random(30)) + [None, float("nan")]
    a = metrics.bootstrap_ci(values, 1000, seed=3)
    assert a == metrics.bootstrap_ci(values, 1000, seed=3)
    assert a != metrics.bootstrap_ci(values, 1000, seed=4)
    assert a["n"] == 30 and a["mean"] == pytest.approx(np.mean(values[:30]))
    assert a["ci_low"] < a["mean"] < a["ci_high"]
    assert metrics.bootstrap_ci(values, 0) == {"mean": a["mean"], "ci_low": None, "ci_high": None, "n": 30}
    assert metrics.bootstrap_ci([None, None]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    one = metrics.bootstrap_ci([0.5], 100)
    assert one["ci_low"] == one["ci_high"] == 0.5


def test_case_level_metrics():
    m = metrics.case_level_metrics([0.9, 0.3, 0.4, 0.1], [True, True, False, False], case_threshold=0.35)
    assert m["auroc"] == pytest.approx(0.75) and m["num_anomalous"] == 2 and m["num_healthy"] == 2
    assert m["ap"] == pytest.approx(average_precision_score([1, 1, 0, 0], [0.9, 0.3, 0.4, 0.1]))
    assert m["sensitivity"] == 0.5 and m["specificity"] == 0.5
    m = metrics.case_level_metrics([0.9, 0.3], [True, True], flagged=[True, False])
    assert m["auroc"] is None and m["ap"] is None and m["sensitivity"] == 0.5 and m["specificity"] is None
    assert metrics.case_level_metrics([0.9, 0.3], [True, False])["sensitivity"] is None


# ---------------------------------------------------------------- folder listing

def test_endings_longest_first(tmp_path):
    endings = known_endings()
    assert endings.index(".nii.gz") < endings.index(".nii") and endings.index(".tiff") < endings.index(".tif")
    assert split_ending("case_01.nii.gz") == ("case_01", ".nii.gz")
    assert split_ending("CASE.TIF") == ("CASE", ".TIF")
    assert split_ending("summary.json") is None
    for name in ("a.nii.gz", "a_mask.nii.gz", "a_restoration_0000.nii.gz", "scores.csv", ".a.nii.gz.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert list(list_cases(tmp_path, skip_derived=True)) == ["a"]
    assert sorted(list_cases(tmp_path)) == ["a", "a_mask", "a_restoration_0000"]
    (tmp_path / "a.nii").write_bytes(b"")
    with pytest.raises(EvaluationError, match="a.nii"):
        list_cases(tmp_path)


# ---------------------------------------------------------------- end to end

def make_folders(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Two anomalous cases + one healthy one on an anisotropic grid, with scores.csv and prediction.json."""
    pred, gt = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    shape = (4, 6, 5)  # (z, y, x)
    data = {}
    for case, anomalous in (("case_a", True), ("case_b", True), ("healthy", False)):
        label = np.zeros(shape, np.uint8)
        if anomalous:
            label[1:3, 2:5, 1:4] = 1
        amap = (rng.random(shape) * 0.7 + 0.5 * label).astype(np.float32)
        write_nifti(amap, pred / f"{case}.nii.gz")
        write_nifti(label, gt / f"{case}.nii.gz")
        write_nifti((amap > 0.6).astype(np.uint8), pred / f"{case}_mask.nii.gz")  # predictor output, not a map
        write_nifti(amap, pred / f"{case}_restoration_0000.nii.gz")
        data[case] = (amap.ravel(), label.ravel() > 0)
    (pred / "scores.csv").write_text("case,score,flagged\ncase_a,0.9,1\ncase_b,0.3,0\nhealthy,0.4,0\n")
    (pred / "prediction.json").write_text(json.dumps({"voxel_threshold": 0.6, "case_threshold": 0.5}))
    return pred, gt, data


def test_cli_end_to_end(tmp_path, capsys):
    pred, gt, data = make_folders(tmp_path)
    assert main(["-p", str(pred), "-g", str(gt), "--disable_progress_bar", "--num_bootstrap", "200"]) == 0
    assert "pooled voxel AP" in capsys.readouterr().out
    summary = strict_json(pred / "summary.json")
    s = np.concatenate([v[0] for v in data.values()])
    y = np.concatenate([v[1] for v in data.values()])
    p = summary["pooled"]
    assert p["num_voxels"] == s.size and p["num_positive"] == y.sum()
    assert p["ap"] == pytest.approx(average_precision_score(y, s), rel=1e-9)
    assert p["auroc"] == pytest.approx(roc_auc_score(y, s), rel=1e-9)
    d_ref, t_ref = brute_force_best_dice(s, y)
    assert p["best_dice"] == pytest.approx(d_ref) and p["best_dice_threshold"] == pytest.approx(t_ref)
    called = s.astype(np.float64) >= 0.6
    tp, fp, fn = (called & y).sum(), (called & ~y).sum(), (~called & y).sum()
    assert (p["tp"], p["fp"], p["fn"]) == (tp, fp, fn)
    assert p["dice_at_threshold"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert p["precision_at_threshold"] == pytest.approx(tp / (tp + fp))
    assert p["recall_at_threshold"] == pytest.approx(tp / (tp + fn))
    assert summary["thresholds"]["voxel_threshold"] == 0.6 and summary["thresholds"]["case_threshold"] == 0.5

    per_ap = [average_precision_score(data[c][1], data[c][0]) for c in ("case_a", "case_b")]
    ap = summary["per_case_mean"]["ap"]
    assert ap["n"] == 2 and ap["mean"] == pytest.approx(np.mean(per_ap))
    assert min(per_ap) <= ap["ci_low"] <= ap["mean"] <= ap["ci_high"] <= max(per_ap)
    assert summary["per_case_mean"]["dice_at_threshold"]["n"] == 2

    cl = summary["case_level"]  # scores 0.9 / 0.3 anomalous, 0.4 healthy; threshold 0.5
    assert cl["num_anomalous"] == 2 and cl["num_healthy"] == 1
    assert cl["auroc"] == pytest.approx(0.5) and cl["sensitivity"] == 0.5 and cl["specificity"] == 1.0
    assert cl["decision"] == "score >= case_threshold"

    rows = read_csv(pred / "per_case.csv")
    assert sorted(rows) == ["case_a", "case_b", "healthy"]
    assert rows["healthy"]["ap"] == "" and rows["healthy"]["dice_at_threshold"] == ""
    assert rows["healthy"]["anomalous"] == "0" and float(rows["healthy"]["score"]) == 0.4
    assert float(rows["case_a"]["ap"]) == pytest.approx(per_ap[0])
    fp_h = (data["healthy"][0] >= np.float32(0.6)).sum()
    assert float(rows["healthy"]["fp_fraction_at_threshold"]) == pytest.approx(fp_h / data["healthy"][0].size)
    assert [c["case"] for c in summary["cases"]] == ["case_a", "case_b", "healthy"]
    assert summary["cases"][2]["ap"] is None
    # deterministic under the seed; leftover outputs in PRED are not taken for maps
    assert main(["-p", str(pred), "-g", str(gt), "--disable_progress_bar", "--num_bootstrap", "200"]) == 0
    assert strict_json(pred / "summary.json")["per_case_mean"] == summary["per_case_mean"]


def test_thresholds_precedence_and_absence(tmp_path, capsys):
    pred, gt, data = make_folders(tmp_path)
    out = tmp_path / "eval" / "result.json"
    s = evaluate_folder(pred, gt, out, threshold=0.8, num_bootstrap=10, disable_progress_bar=True)
    assert s["thresholds"]["voxel_threshold"] == 0.8 and s["thresholds"]["voxel_threshold_source"] == "--threshold"
    assert s["thresholds"]["case_threshold"] == 0.5
    assert out.is_file() and (out.parent / "per_case.csv").is_file()
    other = tmp_path / "calib.json"
    other.write_text(json.dumps({"voxel_threshold": 0.7}))
    s = evaluate_folder(pred, gt, out, threshold_from=other, num_bootstrap=10, disable_progress_bar=True)
    assert s["thresholds"]["voxel_threshold"] == 0.7 and s["thresholds"]["case_threshold"] is None
    assert s["case_level"]["decision"] == "flagged column of scores.csv"  # no case threshold: the predictor's flags
    assert s["case_level"]["sensitivity"] == 0.5 and s["case_level"]["specificity"] == 1.0

    (pred / "prediction.json").unlink()
    (pred / "scores.csv").unlink()
    capsys.readouterr()
    assert main(["-p", str(pred), "-g", str(gt), "--disable_progress_bar", "--num_bootstrap", "10"]) == 0
    assert "no voxel threshold" in capsys.readouterr().err
    summary = strict_json(pred / "summary.json")
    assert summary["pooled"]["dice_at_threshold"] is None and summary["pooled"]["best_dice"] is not None
    assert summary["per_case_mean"]["dice_at_threshold"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    top = metrics.top_fraction_mean(data["case_a"][0])
    assert summary["cases"][0]["score"] == pytest.approx(top)  # no scores.csv: mean of the top 1 %
    assert summary["case_level"]["sensitivity"] is None

    with pytest.raises(EvaluationError, match="missing.json"):
        evaluate_folder(pred, gt, threshold_from=tmp_path / "missing.json", disable_progress_bar=True)
    calibration = tmp_path / "calibration.json"  # a fold's: thresholds per false-positive rate
    calibration.write_text(json.dumps({"voxel_thresholds": {"0.001": 0.9, "0.01": 0.7, "0.05": 0.5},
                                       "case_threshold": 0.6}))
    with pytest.raises(EvaluationError, match=r"calibration.json.*one voxel threshold per false-positive rate "
                                              r"\(0.001: 0.9, 0.01: 0.7, 0.05: 0.5\).*--threshold"):
        evaluate_folder(pred, gt, threshold_from=calibration, disable_progress_bar=True)


def test_grid_mismatch_names_files(tmp_path, capsys):
    pred, gt, _ = make_folders(tmp_path)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(gt / "case_b.nii.gz")))
    write_nifti(label, gt / "case_b.nii.gz", spacing=(0.8, 0.8, 2.0))
    assert main(["-p", str(pred), "-g", str(gt), "--disable_progress_bar"]) == 1
    err = capsys.readouterr().err
    assert "case_b.nii.gz" in err and "spacing" in err and str(gt) in err and str(pred) in err
    write_nifti(label, gt / "case_b.nii.gz", origin=(10.0, -20.0, 5.5))
    with pytest.raises(EvaluationError, match="origin"):
        evaluate_folder(pred, gt, disable_progress_bar=True)
    write_nifti(label, gt / "case_b.nii.gz", origin=(10.0 + 1e-6, -20.0, 5.0))  # within tolerance
    evaluate_folder(pred, gt, num_bootstrap=0, disable_progress_bar=True)
    write_nifti(label[:, :, :4], gt / "case_b.nii.gz")
    with pytest.raises(EvaluationError, match=r"case_b\.nii\.gz.*size"):
        evaluate_folder(pred, gt, disable_progress_bar=True)


def test_missing_cases(tmp_path, capsys):
    pred, gt, _ = make_folders(tmp_path)
    write_nifti(np.zeros((4, 6, 5), np.uint8), gt / "extra.nii.gz")
    assert main(["-p", str(pred), "-g", str(gt), "--disable_progress_bar"]) == 1
    assert str(gt / "extra.nii.gz") in capsys.readouterr().err
    (gt / "extra.nii.gz").unlink()
    (gt / "healthy.nii.gz").unlink()
    with pytest.raises(EvaluationError, match="allow_missing_labels") as e:
        evaluate_folder(pred, gt, disable_progress_bar=True)
    assert str(pred / "healthy.nii.gz") in str(e.value)
    s = evaluate_folder(pred, gt, allow_missing_labels=True, num_bootstrap=10, disable_progress_bar=True)
    assert s["num_cases"] == 2 and any("healthy.nii.gz" in n for n in s["notes"])
    assert "warning" in capsys.readouterr().err
    assert s["case_level"]["auroc"] is None  # no healthy case left


def test_2d_tif_maps_with_png_labels(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(5)
    all_s, all_y = [], []
    for case in ("img1", "img2"):
        label = np.zeros((16, 12), np.uint8)
        label[4:9, 3:7] = 255
        amap = (rng.random((16, 12)) + (label > 0)).astype(np.float32)
        skimage.io.imsave(str(pred / f"{case}.tif"), amap, check_contrast=False)
        skimage.io.imsave(str(gt / f"{case}.png"), label, check_contrast=False)
        all_s.append(amap.ravel())
        all_y.append(label.ravel() > 0)
    s = evaluate_folder(pred, gt, threshold=1.0, num_bootstrap=10, disable_progress_bar=True)
    sc, yc = np.concatenate(all_s), np.concatenate(all_y)
    assert s["num_cases"] == 2 and s["pooled"]["num_voxels"] == 2 * 16 * 12
    assert s["pooled"]["ap"] == pytest.approx(average_precision_score(yc, sc))
    assert s["pooled"]["dice_at_threshold"] == pytest.approx(metrics.dice_at_threshold(sc, yc, 1.0))
    skimage.io.imsave(str(gt / "img2.png"), np.zeros((16, 10), np.uint8), check_contrast=False)
    with pytest.raises(EvaluationError, match="img2.tif"):
        evaluate_folder(pred, gt, disable_progress_bar=True)


def test_bad_inputs_are_clear_errors(tmp_path):
    pred, gt, data = make_folders(tmp_path)
    (pred / "scores.csv").write_text("case,score\ncase_a,0.9\n")
    with pytest.raises(EvaluationError, match="case_b"):
        evaluate_folder(pred, gt, disable_progress_bar=True)
    (pred / "scores.csv").unlink()
    (pred / "prediction.json").write_text(json.dumps({"voxel_threshold": "high"}))
    with pytest.raises(EvaluationError, match="voxel_threshold"):
        evaluate_folder(pred, gt, disable_progress_bar=True)
    (pred / "prediction.json").unlink()
    amap = data["case_a"][0].reshape(4, 6, 5).copy()
    amap[1, 2, 3] = np.nan
    (pred / "case_a.nii.gz").unlink()
    write_nifti(amap, pred / "case_a.nrrd")  # NRRD keeps NaN (SimpleITK reads NaN in NIfTI as 0)
    with pytest.raises(EvaluationError, match="case_a.nrrd.*NaN"):
        evaluate_folder(pred, gt, disable_progress_bar=True)
    with pytest.raises(SystemExit):
        main(["-p", str(pred), "-g", str(gt), "--threshold", "nan"])
