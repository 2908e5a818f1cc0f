"""uadnet_ensemble: a folder with itself gives the folder back bit for bit; two differently scaled members are
rescaled to the mean threshold (hand-computed values); mismatched cases, grids, --fpr and MOOD folders are refused
naming the folder and the case, before anything is written; --recalibrate on a tiny model with itself gives its own
calibrated thresholds and masks, and a member without a model folder is refused naming its prediction.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import write_sitk
from uadnet.cli.ensemble import main as ensemble_main
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO
from uadnet.inference.ensemble import EnsembleError, ensemble_folders
from uadnet.inference.folder_runner import FolderRun, run_folder

SPACING = (2.0, 1.0, 1.5)


class ScaledScorer:
    """A CaseScorer whose map is ``scale`` times the image (case score: its maximum), thresholds ``scale`` times
    (voxel 2, case 4): the same detector in other units."""

    reader = SimpleITKIO()
    file_ending = output_ending = ".nii.gz"
    writes_restoration = False

    def __init__(self, scale: float, fpr: float = 0.01) -> None:
        self.scale, self.fpr = scale, fpr
        self.voxel_threshold, self.case_threshold = 2.0 * scale, 4.0 * scale

    def read(self, case):
        return self.reader.read_images(case.images)

    def score_case(self, image, properties):
        amap = image[0] * np.float32(self.scale)
        return {"map": amap, "score": float(amap.max()), "seconds": {}}

    def prediction_json(self):
        return {"method": f"scaled_{self.scale:g}", "fpr": self.fpr, "voxel_threshold": self.voxel_threshold,
                "case_threshold": self.case_threshold}


def _inputs(tmp_path, n: int = 3, spacing=SPACING):
    inp = tmp_path / f"in{n}_{spacing[0]:g}"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        write_sitk(rng.uniform(0, 5, (3, 5, 4)).astype(np.float32), inp / f"case{i}_0000.nii.gz", spacing)
    return inp


def _predict(inp, out, scale: float, **kwargs):
    assert run_folder(ScaledScorer(scale, **kwargs), FolderRun(inp, out, progress_bar=False)) == 0
    return out


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_folder_with_itself_is_the_folder(tmp_path):
    a = _predict(_inputs(tmp_path), tmp_path / "a", 0.37)
    assert ensemble_main(["-i", str(a), str(a), "-o", str(tmp_path / "e"), "--disable_progress_bar"]) == 0
    e = tmp_path / "e"
    for i in range(3):
        for suffix in ("", "_mask"):
            ref, got = sitk.ReadImage(str(a / f"case{i}{suffix}.nii.gz")), sitk.ReadImage(str(e / f"case{i}{suffix}.nii.gz"))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
            assert sitk.GetArrayFromImage(got).dtype == sitk.GetArrayFromImage(ref).dtype
            assert got.GetSpacing() == ref.GetSpacing() and got.GetOrigin() == ref.GetOrigin()
        record = json.loads((e / "per_case" / f"case{i}.json").read_text(encoding="utf-8"))
        original = json.loads((a / "per_case" / f"case{i}.json").read_text(encoding="utf-8"))
        for key in ("score", "flagged", "voxel_threshold", "case_threshold", "anomalous_voxels", "inputs"):
            assert record[key] == original[key], key
    assert (e / "scores.csv").read_text(encoding="utf-8") == (a / "scores.csv").read_text(encoding="utf-8")
    info = json.loads((e / "prediction.json").read_text(encoding="utf-8"))
    assert info["voxel_threshold"] == pytest.approx(0.74) and len(info["members"]) == 2
    assert info["members"][0]["folder"] == str(a.resolve()) and info["members"][0]["method"] == "scaled_0.37"


def test_members_are_rescaled_to_the_mean_threshold(tmp_path):
    inp = _inputs(tmp_path)
    a, b = _predict(inp, tmp_path / "a", 1.0), _predict(inp, tmp_path / "b", 10.0)
    out = tmp_path / "e"
    assert ensemble_folders([a, b], out, progress_bar=False) == 3
    info = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    T, C = (2.0 + 20.0) / 2, (4.0 + 40.0) / 2  # the mean thresholds
    assert info["voxel_threshold"] == T and info["case_threshold"] == C
    assert info["thresholds"]["healthy_voxel_false_positive_rate_at_most"] == pytest.approx(0.02)
    for i in range(3):
        image = _array(inp / f"case{i}_0000.nii.gz").astype(np.float64)
        # member a: image · T/2, member b: 10·image · T/20: the same detector, so both are image · T/2
        np.testing.assert_allclose(_array(out / f"case{i}.nii.gz"), image * T / 2, rtol=1e-6)
        np.testing.assert_array_equal(_array(out / f"case{i}_mask.nii.gz"), _array(a / f"case{i}_mask.nii.gz"))
        record = json.loads((out / "per_case" / f"case{i}.json").read_text(encoding="utf-8"))
        assert record["score"] == pytest.approx(image.max() * C / 4, rel=1e-6)
        assert record["flagged"] == (image.max() >= 4) and [m["score"] for m in record["members"]] == pytest.approx(
            [image.max(), 10 * image.max()], rel=1e-6)


def test_mismatched_members_are_refused_naming_folder_and_case(tmp_path, capsys):
    inp = _inputs(tmp_path)
    a = _predict(inp, tmp_path / "a", 1.0)
    fewer = _predict(_inputs(tmp_path, n=2), tmp_path / "fewer", 1.0)
    out = tmp_path / "e"
    assert ensemble_main(["-i", str(a), str(fewer), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "case2" in err and str(fewer.resolve()) in err and "--continue_prediction" in err
    assert not out.exists()  # nothing written

    other_grid = _predict(_inputs(tmp_path, spacing=(3.0, 1.0, 1.5)), tmp_path / "grid", 1.0)
    with pytest.raises(EnsembleError, match=r"case0: .*not on the same grid \(spacing"):
        ensemble_folders([a, other_grid], out, progress_bar=False)

    with pytest.raises(EnsembleError, match="same --fpr"):
        ensemble_folders([a, _predict(inp, tmp_path / "fpr", 1.0, fpr=0.05)], out, progress_bar=False)
    with pytest.raises(EnsembleError, match="must not be a member"):
        ensemble_folders([a, a], a, progress_bar=False)
    with pytest.raises(EnsembleError, match="at least two"):
        ensemble_folders([a], out, progress_bar=False)
    mood = tmp_path / "mood"
    assert run_folder(ScaledScorer(1.0), FolderRun(inp, mood, progress_bar=False, output_format="mood")) == 0
    with pytest.raises(EnsembleError, match="--output_format mood"):
        ensemble_folders([a, mood], out, progress_bar=False)
    # a folder whose records were written with other thresholds than its prediction.json says
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    info = json.loads((mixed / "prediction.json").read_text(encoding="utf-8"))
    (mixed / "prediction.json").write_text(json.dumps({**info, "voxel_threshold": 3.0}), encoding="utf-8")
    with pytest.raises(EnsembleError, match="mixes runs"):
        ensemble_folders([a, mixed], out, progress_bar=False)
    assert ensemble_main(["-i", str(a), str(tmp_path / "nowhere"), "-o", str(out)]) == 1
    assert "prediction.json is missing" in capsys.readouterr().err


def test_recalibrate_a_model_with_itself_gives_its_own_thresholds_and_masks(tiny_trained_model, tmp_path,
                                                                            monkeypatch, capsys):
    """--recalibrate scores fold 0's healthy validation cases again with the member's network; two copies of one
    prediction folder combine to the member's own maps (weights exactly 1), so the thresholds are the quantiles
    calibration.json was computed with, on the same cases: equal up to float rounding, and the masks equal."""
    from uadnet.cli.predict import main as predict_main

    monkeypatch.setenv("UADNET_PREPROCESSED", str(tiny_trained_model["preprocessed"]))
    a, b, e = tmp_path / "a", tmp_path / "b", tmp_path / "e"
    assert predict_main(["-i", str(tiny_trained_model["test_images"]), "-o", str(a), "--model_folder",
                         str(tiny_trained_model["model_folder"]), "--device", "cpu", "--disable_progress_bar"]) == 0
    shutil.copytree(a, b)
    assert ensemble_main(["-i", str(a), str(b), "-o", str(e), "--recalibrate", "--device", "cpu",
                          "--disable_progress_bar"]) == 0
    calibration = json.loads((tiny_trained_model["model_folder"] / "fold_0" / "calibration.json").read_text("utf-8"))
    member = json.loads((a / "prediction.json").read_text(encoding="utf-8"))
    info = json.loads((e / "prediction.json").read_text(encoding="utf-8"))
    thresholds = info["thresholds"]
    assert thresholds["calibrated_false_positive_rate"] == member["fpr"] == 0.01
    assert thresholds["per_fold"]["0"]["cases"] == calibration["cases"]  # the cases the member was calibrated on
    # one fold: the ensemble's thresholds are fold 0's, and the member's are its fold 0's calibration.json ones
    assert info["voxel_threshold"] == thresholds["per_fold"]["0"]["voxel_threshold"]
    assert info["voxel_threshold"] == pytest.approx(member["voxel_threshold"], rel=1e-6)
    assert info["case_threshold"] == pytest.approx(member["case_threshold"], rel=1e-6)
    assert thresholds["per_fold"]["0"]["healthy_case_scores"] == pytest.approx(
        calibration["healthy_case_scores"]["values"], rel=1e-6)
    for case in ("test_000", "test_001"):
        np.testing.assert_array_equal(_array(e / f"{case}.nii.gz"), _array(a / f"{case}.nii.gz"))
        np.testing.assert_array_equal(_array(e / f"{case}_mask.nii.gz"), _array(a / f"{case}_mask.nii.gz"))
        record = json.loads((e / "per_case" / f"{case}.json").read_text(encoding="utf-8"))
        original = json.loads((a / "per_case" / f"{case}.json").read_text(encoding="utf-8"))
        assert record["score"] == original["score"] and record["flagged"] == original["flagged"]
        assert record["voxel_threshold"] == info["voxel_threshold"]

    # a member that names no model folder (as a baseline's prediction.json) is refused naming its file
    no_model = tmp_path / "no_model"
    shutil.copytree(a, no_model)
    (no_model / "prediction.json").write_text(json.dumps({k: v for k, v in member.items() if k != "model_folder"}),
                                              encoding="utf-8")
    assert ensemble_main(["-i", str(a), str(no_model), "-o", str(tmp_path / "x"), "--recalibrate",
                          "--disable_progress_bar"]) == 1
    err = capsys.readouterr().err
    assert str(no_model.resolve() / "prediction.json") in err and "does not name the model that predicted it" in err
    assert not (tmp_path / "x").exists()
    # without the preprocessed dataset: the variable and the file are named
    monkeypatch.setenv("UADNET_PREPROCESSED", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="splits_final.json is missing: point UADNET_PREPROCESSED"):
        ensemble_folders([a, b], tmp_path / "y", progress_bar=False, recalibrate_thresholds=True, device="cpu")
