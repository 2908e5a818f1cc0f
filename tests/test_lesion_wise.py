"""Lesion-wise detection by size and per-group (lesion kind) AP of uadnet_evaluate, on hand-made cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.test_evaluation import read_csv, strict_json, write_nifti
from uadnet.cli.evaluate import main
from uadnet.evaluation import lesion_wise
from uadnet.evaluation.evaluator import EvaluationError, evaluate_folder

SHAPE = (10, 12, 12)  # (z, y, x)
ISO2 = (2.0, 2.0, 2.0)  # mm
F32_07 = np.float32(0.7)  # 0.69999999 < 0.7: not >= 0.7 when compared exactly


def make_lesion_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Case 'lesions': a 1-voxel lesion (d 2.48 mm, missed) and a 6×6×6 cube (d 14.9 mm, hit) at 2 mm, plus two
    false-positive components (one only 26-connected); case 'healthy': one false-positive component."""
    pred, gt = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    gt.mkdir()
    label = np.zeros(SHAPE, np.uint8)
    label[1, 1, 1] = 1  # small lesion
    label[3:9, 4:10, 4:10] = 2  # cube, another label value: still "> 0"
    amap = np.full(SHAPE, 0.1, np.float32)
    amap[label > 0] = 0.2
    amap[1, 1, 1] = F32_07  # max of the small lesion: just below the threshold 0.7
    amap[5, 6, 9] = amap[5, 6, 10] = 0.9  # hits the cube and leaks out of it: one component touching the label
    amap[0, 10:12, 10:12] = 0.8  # false positive 1
    amap[8, 0, 0] = amap[9, 1, 1] = 0.75  # false positive 2: diagonal neighbours, one 26-connected component
    write_nifti(amap, pred / "lesions.nii.gz", spacing=ISO2)
    write_nifti(label, gt / "lesions.nii.gz", spacing=ISO2)
    healthy = np.full(SHAPE, 0.1, np.float32)
    healthy[2, 3, 3:5] = 0.9  # one false-positive component
    write_nifti(healthy, pred / "healthy.nii.gz", spacing=ISO2)
    write_nifti(np.zeros(SHAPE, np.uint8), gt / "healthy.nii.gz", spacing=ISO2)
    return pred, gt


def test_equivalent_diameter():
    d = lesion_wise.equivalent_diameter_mm(np.array([1, 216]), ISO2, single_slice=False)
    assert d == pytest.approx([(6 * 8 / math.pi) ** (1 / 3), (6 * 1728 / math.pi) ** (1 / 3)], rel=1e-12)
    assert d[0] == pytest.approx(2.4814, abs=1e-4) and d[1] == pytest.approx(14.8884, abs=1e-4)
    # single slice: in-plane area only (the dummy slice spacing 999 is ignored), spacing order (z, y, x)
    d2 = lesion_wise.equivalent_diameter_mm(np.array([25]), (999.0, 2.0, 0.5), single_slice=True)
    assert d2 == pytest.approx([math.sqrt(4 * 25 / math.pi)], rel=1e-12)
    d3 = lesion_wise.equivalent_diameter_mm(np.array([1]), (3.0, 1.0, 2.0), single_slice=False)
    assert d3 == pytest.approx([(36 / math.pi) ** (1 / 3)], rel=1e-12)


def test_case_lesions_direct():
    labels = np.zeros((3, 5, 5), bool)
    labels[0, 0, 0] = labels[1, 1, 1] = True  # diagonal: one lesion of 2 voxels (26-connectivity)
    labels[2, 4, 4] = True
    scores = np.zeros((3, 5, 5), np.float32)
    scores[2, 4, 4] = 0.5
    scores[0, 4, 0] = 0.6
    rec = lesion_wise.case_lesions(scores, labels, (1.0, 1.0, 1.0), 0.5)
    assert rec.diameters_mm.size == 2 and sorted(rec.max_scores.tolist()) == [0.0, 0.5]
    assert rec.detected.tolist() == [False, True] and rec.fp_components == 1 and not rec.healthy
    assert rec.row() == {"lesions": 2, "lesions_detected": 1, "fp_components": 1}
    rec = lesion_wise.case_lesions(scores, labels, (1.0, 1.0, 1.0), None)
    assert rec.detected is None and rec.row() == {"lesions": 2, "lesions_detected": None, "fp_components": None}


def test_summarize_bin_edges_and_healthy_cases():
    rec = lesion_wise.CaseLesions(np.array([4.999, 5.0, 10.0, 19.99, 20.0, 300.0]), np.arange(6, dtype=np.float32),
                                  np.array([True, False, True, True, False, False]), 4)
    healthy = lesion_wise.CaseLesions(np.zeros(0), np.zeros(0, np.float32), np.zeros(0, bool), 2)
    lw = lesion_wise.summarize([rec, healthy], 0.5)
    assert [(b["lesions"], b["detected"]) for b in lw["bins"]] == [(1, 1), (1, 0), (2, 2), (2, 0)]
    assert [b["median_max_score"] for b in lw["bins"]] == [0.0, 1.0, 2.5, 4.5]
    assert lw["all"]["detection_rate"] == 0.5 and lw["num_healthy_cases"] == 1
    assert lw["false_positive_components"] == 6 and lw["false_positive_components_in_healthy_cases"] == 2


def test_lesion_wise_end_to_end(tmp_path, capsys):
    pred, gt = make_lesion_folders(tmp_path)
    assert main(["-p", str(pred), "-g", str(gt), "--threshold", "0.7", "--num_bootstrap", "0",
                 "--disable_progress_bar"]) == 0
    out = capsys.readouterr().out
    assert "lesions <5 mm: 0/1 detected (0 %)" in out and "lesions 10-20 mm: 1/1 detected (100 %)" in out
    assert "lesions all: 1/2 detected (50 %)" in out and "false-positive components: 3 (1 in 1 healthy" in out
    lw = strict_json(pred / "summary.json")["lesion_wise"]
    assert lw["threshold"] == 0.7 and lw["size_bins_mm"] == [0, 5, 10, 20]
    assert [b["bin"] for b in lw["bins"]] == ["<5 mm", "5-10 mm", "10-20 mm", ">=20 mm"]
    assert [(b["low_mm"], b["high_mm"]) for b in lw["bins"]] == [(0, 5), (5, 10), (10, 20), (20, None)]
    assert [(b["lesions"], b["detected"], b["detection_rate"]) for b in lw["bins"]] == [
        (1, 0, 0.0), (0, 0, None), (1, 1, 1.0), (0, 0, None)]
    assert lw["bins"][0]["median_max_score"] == pytest.approx(float(F32_07), abs=0)
    assert lw["bins"][2]["median_max_score"] == pytest.approx(0.9, rel=1e-6)
    assert lw["bins"][1]["median_max_score"] is None
    a = lw["all"]
    assert (a["lesions"], a["detected"], a["detection_rate"]) == (2, 1, 0.5)
    assert a["median_max_score"] == pytest.approx(0.8, rel=1e-6)
    assert lw["false_positive_components"] == 3 and lw["false_positive_components_in_healthy_cases"] == 1
    assert lw["num_healthy_cases"] == 1
    rows = read_csv(pred / "per_case.csv")
    assert [rows["lesions"][k] for k in ("lesions", "lesions_detected", "fp_components")] == ["2", "1", "2"]
    assert [rows["healthy"][k] for k in ("lesions", "lesions_detected", "fp_components")] == ["0", "0", "1"]

    # the float32 score 0.69999999 reaches the threshold float32(0.7) read off the map: the small lesion is hit
    s = evaluate_folder(pred, gt, threshold=float(F32_07), num_bootstrap=0, disable_progress_bar=True)
    assert s["lesion_wise"]["bins"][0]["detected"] == 1 and s["lesion_wise"]["all"]["detected"] == 2

    # no threshold: sizes and max scores still reported, detection and false positives null
    s = evaluate_folder(pred, gt, num_bootstrap=0, disable_progress_bar=True, verbose=False)
    lw = s["lesion_wise"]
    assert [b["lesions"] for b in lw["bins"]] == [1, 0, 1, 0]
    assert all(b["detected"] is None and b["detection_rate"] is None for b in [*lw["bins"], lw["all"]])
    assert lw["false_positive_components"] is None and lw["false_positive_components_in_healthy_cases"] is None
    assert lw["all"]["median_max_score"] == pytest.approx(0.8, rel=1e-6)
    assert read_csv(pred / "per_case.csv")["lesions"]["lesions_detected"] == ""
    assert s["groups"] is None


def test_2d_png_uses_area_and_8_connectivity(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    gt.mkdir()
    label = np.zeros((20, 20), np.uint8)
    label[1:5, 1:5] = 255  # 16 px: d = sqrt(64 / pi) = 4.51 px
    label[8:18, 6:16] = 255  # 100 px: d = 11.28 px
    label[0, 19] = label[1, 18] = 255  # diagonal pair: one lesion of 2 px with 8-connectivity
    amap = np.zeros((20, 20), np.float32)
    amap[10, 10] = 1.0  # hits the big square
    amap[19, 0] = 1.0  # a false positive
    skimage.io.imsave(str(pred / "img.tif"), amap, check_contrast=False)
    skimage.io.imsave(str(gt / "img.png"), label, check_contrast=False)
    s = evaluate_folder(pred, gt, threshold=0.5, num_bootstrap=0, disable_progress_bar=True)
    lw = s["lesion_wise"]
    assert [(b["lesions"], b["detected"]) for b in lw["bins"]] == [(2, 0), (0, 0), (1, 1), (0, 0)]
    assert lw["all"]["lesions"] == 3 and lw["false_positive_components"] == 1 and lw["num_healthy_cases"] == 0
    assert lesion_wise.equivalent_diameter_mm(np.array([100]), (999.0, 1.0, 1.0), True)[0] == pytest.approx(
        math.sqrt(400 / math.pi))


GROUPS = {"t1": "tumour", "t2": "tumour", "w1": "wmh", "h1": "healthy"}  # h2 is not listed


def make_group_folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    pred, gt = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(3)
    shape = (4, 8, 8)
    data = {}
    for case in ("h1", "h2", "t1", "t2", "w1"):
        label = np.zeros(shape, np.uint8)
        if case.startswith("t"):
            label[1:3, 2:6, 2:6] = 1
        elif case == "w1":
            label[0, 0:2, 0:2] = 1
            label[3, 6:8, 6:8] = 1  # a second lesion
        amap = (rng.random(shape) * 0.8 + 0.4 * (label > 0)).astype(np.float32)
        write_nifti(amap, pred / f"{case}.nii.gz")
        write_nifti(label, gt / f"{case}.nii.gz")
        data[case] = (amap.ravel(), label.ravel() > 0)
    return pred, gt, data


@pytest.mark.parametrize("form", ["mapping", "dataset_json"])
def test_groups(tmp_path, capsys, form):
    pred, gt, data = make_group_folders(tmp_path)
    groups_file = tmp_path / ("groups.json" if form == "mapping" else "dataset.json")
    content = GROUPS if form == "mapping" else {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz",
                                                "numTraining": 3, "test_case_lesions": GROUPS}
    groups_file.write_text(json.dumps(content))
    assert main(["-p", str(pred), "-g", str(gt), "--threshold", "0.9", "--num_bootstrap", "0", "--groups",
                 str(groups_file), "--disable_progress_bar"]) == 0
    captured = capsys.readouterr()
    assert "group tumour (2 cases + 2 other healthy): voxel AP" in captured.out and "case AUROC" in captured.out
    assert "'unlisted'" in captured.err and "h2" in captured.err
    summary = strict_json(pred / "summary.json")
    assert summary["groups_file"] == str(groups_file)
    g = summary["groups"]
    assert sorted(g) == ["healthy", "tumour", "unlisted", "wmh"]
    for name, members in (("tumour", ["t1", "t2"]), ("wmh", ["w1"])):
        pooled = sorted(set(members) | {"h1", "h2"})
        s = np.concatenate([data[c][0] for c in pooled])
        y = np.concatenate([data[c][1] for c in pooled])
        assert g[name]["num_voxels"] == s.size and g[name]["num_positive"] == y.sum()
        assert g[name]["ap"] == pytest.approx(average_precision_score(y, s), rel=1e-9)
        assert g[name]["auroc"] == pytest.approx(roc_auc_score(y, s), rel=1e-9)
        assert g[name]["num_cases"] == len(members) and g[name]["num_healthy_cases_added"] == 2
        # the group's anomalous cases against every healthy one, by the cases' scores (no scores.csv: top 1 %)
        top = {c: np.sort(data[c][0])[-math.ceil(0.01 * data[c][0].size):].mean() for c in pooled}
        assert g[name]["case_auroc"] == pytest.approx(
            roc_auc_score([c in members for c in pooled], [top[c] for c in pooled]), rel=1e-9)
    assert g["tumour"]["ap"] != pytest.approx(g["wmh"]["ap"])
    for name in ("healthy", "unlisted"):
        assert g[name]["ap"] is None and g[name]["auroc"] is None and g[name]["case_auroc"] is None
        assert g[name]["num_cases"] == 1
        assert g[name]["num_healthy_cases_added"] == 1 and g[name]["lesion_wise"]["all"]["lesions"] == 0
    assert g["tumour"]["lesion_wise"]["all"]["lesions"] == 2 and g["wmh"]["lesion_wise"]["all"]["lesions"] == 2
    # lesion-wise per group: only the group's own cases
    fp = {c: int(r["fp_components"]) for c, r in read_csv(pred / "per_case.csv").items()}
    assert g["tumour"]["lesion_wise"]["false_positive_components"] == fp["t1"] + fp["t2"]
    assert g["healthy"]["lesion_wise"]["false_positive_components_in_healthy_cases"] == fp["h1"]
    assert g["healthy"]["lesion_wise"]["num_healthy_cases"] == 1
    assert summary["lesion_wise"]["false_positive_components"] == sum(fp.values())
    # the overall pooled AP is unchanged by --groups
    s_all = np.concatenate([v[0] for v in data.values()])
    y_all = np.concatenate([v[1] for v in data.values()])
    assert summary["pooled"]["ap"] == pytest.approx(average_precision_score(y_all, s_all), rel=1e-9)


@pytest.mark.parametrize("content", ["[1, 2]", '{"t1": 3}', '{"t1": ""}', "{not json",
                                     '{"name": "x", "channel_names": {"0": "T1"}}',
                                     '{"test_case_lesions": ["tumour"]}'])
def test_bad_groups_file(tmp_path, capsys, content):
    pred, gt, _ = make_group_folders(tmp_path)
    bad = tmp_path / "my_groups.json"
    bad.write_text(content)
    with pytest.raises(EvaluationError, match=r"my_groups\.json.*test_case_lesions"):
        evaluate_folder(pred, gt, groups=bad, disable_progress_bar=True)
    assert main(["-p", str(pred), "-g", str(gt), "--groups", str(bad), "--disable_progress_bar"]) == 1
    assert "my_groups.json" in capsys.readouterr().err
    with pytest.raises(EvaluationError, match="missing.json: no such file"):
        evaluate_folder(pred, gt, groups=tmp_path / "missing.json", disable_progress_bar=True)
