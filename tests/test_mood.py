"""MOOD mode: the [0, 1] mapping, the challenge's layout and names (a scorer through the folder loop, and
uadnet_baseline end to end), and uadnet_evaluate --mood against AP computed by hand on a hand-made case."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import make_dataset, uadnet_folders, write_sitk
from uadnet.cli.evaluate import main as evaluate_main
from uadnet.evaluation.mood import challenge_scores, evaluate_mood
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO
from uadnet.inference.folder_runner import FolderRun, run_folder
from uadnet.inference.mood import squash

SPACING, ORIGIN = (2.0, 1.0, 1.5), (4.0, -3.0, 1.0)


# ---------------------------------------------------------------------------------------------- the mapping
def test_squash_is_strictly_increasing_in_0_1_and_one_half_at_the_threshold():
    t = 0.2
    s = np.array([-5.0, 0.0, 0.1, t, 0.4, 2.0, 200.0, 2e5])
    p = squash(s, t)
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p[[1, 3, 4, 5]], [0.25, 0.5, 0.75, 0.95], rtol=0, atol=1e-12)  # 0, t, 2t, 10t
    assert squash(np.array([t]), t)[0] == 0.5  # exactly: a mask voxel (map >= t) has p >= 0.5
    # the tail approaches 1 like 1/s: still apart in float16 (as the challenge reads maps) at 100 t and 500 t
    assert challenge_scores(squash(np.array([100 * t]), t)) < challenge_scores(squash(np.array([500 * t]), t))
    assert squash(np.array([-1.0, 0.0, 1.0]), 0.0)[1] == 0.5  # a zero threshold uses the scale 1


# --------------------------------------------------------------------------------------- the layout
class MapScorer:
    """A CaseScorer whose map is the image itself and whose case score is its maximum."""

    reader = SimpleITKIO()
    file_ending = output_ending = ".nii.gz"
    voxel_threshold, case_threshold = 4.0, 6.0
    writes_restoration = False

    def read(self, case):
        return self.reader.read_images(case.images)

    def score_case(self, image, properties):
        return {"map": image[0], "score": float(image.max()), "seconds": {}}

    def prediction_json(self):
        return {"voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold}


def _inputs(tmp_path, n=3):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(n):
        arr = np.zeros((3, 5, 4), np.float32)
        arr[1, 1:4, 1:3] = np.arange(6, dtype=np.float32).reshape(3, 2) * (i + 1)
        write_sitk(arr, inp / f"{i:05d}_0000.nii.gz", SPACING, ORIGIN)
    return inp


def test_mood_layout_names_range_geometry_and_continue(tmp_path, capsys):
    inp, out = _inputs(tmp_path), tmp_path / "out"
    scorer = MapScorer()
    assert run_folder(scorer, FolderRun(inp, out, progress_bar=False, output_format="mood")) == 0
    assert "MOOD layout" in capsys.readouterr().out
    names = ["00000", "00001", "00002"]
    assert sorted(p.name for p in (out / "pixel").iterdir()) == [f"{n}.nii.gz" for n in names]
    assert sorted(p.name for p in (out / "sample").iterdir()) == [f"{n}.nii.gz.txt" for n in names]
    assert not list(out.glob("*.nii.gz"))  # no uadnet maps or masks beside them
    for i, name in enumerate(names):
        ref = sitk.ReadImage(str(inp / f"{name}_0000.nii.gz"))
        img = sitk.ReadImage(str(out / "pixel" / f"{name}.nii.gz"))
        assert img.GetSize() == ref.GetSize() and img.GetSpacing() == ref.GetSpacing()
        assert img.GetOrigin() == ref.GetOrigin() and img.GetDirection() == ref.GetDirection()
        p, s = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref)
        assert p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
        np.testing.assert_array_equal(p >= 0.5, s >= scorer.voxel_threshold)  # 0.5 = the calibrated threshold
        order = np.argsort(s.ravel(), kind="stable")
        assert np.all(np.diff(p.ravel()[order]) >= 0)  # same ranking
        text = (out / "sample" / f"{name}.nii.gz.txt").read_text(encoding="utf-8")
        sample = float(text)
        assert 0 <= sample <= 1 and sample == pytest.approx(float(squash(5.0 * (i + 1), 6.0)), abs=1e-8)
        record = json.loads((out / "per_case" / f"{name}.json").read_text(encoding="utf-8"))
        assert record["score"] == 5.0 * (i + 1) and record["mood_sample_score"] == sample
    info = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    assert info["output_format"] == "mood" and info["mood"]["pixel_t"] == 4.0
    assert (out / "scores.csv").read_text(encoding="utf-8").count("\n") == 4
    # resumable: finished cases are skipped; a case without its sample file is redone
    stamp = (out / "pixel" / "00000.nii.gz").stat().st_mtime_ns
    (out / "sample" / "00002.nii.gz.txt").unlink()
    assert run_folder(scorer, FolderRun(inp, out, progress_bar=False, output_format="mood",
                                        continue_prediction=True)) == 0
    assert "2 case(s) already predicted, 1 to go" in capsys.readouterr().out
    assert (out / "pixel" / "00000.nii.gz").stat().st_mtime_ns == stamp
    assert (out / "sample" / "00002.nii.gz.txt").is_file()
    with pytest.raises(ValueError, match="output_format"):
        run_folder(scorer, FolderRun(inp, out, progress_bar=False, output_format="moods"))


# ------------------------------------------------------------------------ the metrics on a hand-made case
def _hand_made(tmp_path, mood_labels: bool):
    """Three 1x2x2 cases. Pooled voxels (score → clipped, label):
    A: 1.5→1 (1), 0.5 (0), 0.25 (1), 0.125 (0);  B: 1.0 (0), 0, 0, -2→0 (0);  C: 0, 0, 0, 0.5 (1).
    Thresholds 1: TP 1 FP 1 (P 1/2, R 1/3); 0.5: TP 2 FP 2 (P 1/2, R 2/3); 0.25: TP 3 FP 2 (P 3/5, R 1).
    Pixel AP = 1/3·1/2 + 1/3·1/2 + 1/3·3/5 = 8/15 (without the clipping A's 1.5 would rank alone first: 0.6).
    Samples: B 0.9 (healthy), A 0.8, C 0.7 (abnormal): AP = 1/2·1/2 + 1/2·2/3 = 7/12."""
    pred, labels = tmp_path / "pred", tmp_path / "labels"
    maps = {"A": [1.5, 0.5, 0.25, 0.125], "B": [1.0, 0.0, 0.0, -2.0], "C": [0.0, 0.0, 0.0, 0.5]}
    truth = {"A": [1, 0, 1, 0], "B": [0, 0, 0, 0], "C": [0, 0, 0, 1]}
    samples = {"A": 0.8, "B": 0.9, "C": 0.7}
    for d in (pred / "pixel", pred / "sample", labels / "pixel" if mood_labels else labels):
        d.mkdir(parents=True)
    for case, values in maps.items():
        write_sitk(np.array(values, np.float32).reshape(1, 2, 2), pred / "pixel" / f"{case}.nii.gz", SPACING)
        (pred / "sample" / f"{case}.nii.gz.txt").write_text(f"{samples[case]}\n", encoding="utf-8")
        label_dir = labels / "pixel" if mood_labels else labels
        write_sitk(np.array(truth[case], np.uint8).reshape(1, 2, 2), label_dir / f"{case}.nii.gz", SPACING)
    if mood_labels:  # MOOD's own label folder: pixel/ and sample/<name>.txt with 0 or 1
        (labels / "sample").mkdir()
        for case in maps:
            (labels / "sample" / f"{case}.nii.gz.txt").write_text(str(int(any(truth[case]))), encoding="utf-8")
    write_sitk(np.zeros((1, 2, 2), np.float32), pred / "pixel" / "D.nii.gz", SPACING)  # no label: left out
    return pred, labels


@pytest.mark.parametrize("mood_labels", [False, True], ids=["uadnet_labels", "mood_labels"])
def test_mood_metrics_equal_the_hand_computed_ap(tmp_path, mood_labels):
    pred, labels = _hand_made(tmp_path, mood_labels)
    assert evaluate_main(["-p", str(pred), "-g", str(labels), "--mood", "--disable_progress_bar"]) == 0
    summary = json.loads((pred / "mood_summary.json").read_text(encoding="utf-8"))
    assert summary["pixel_ap"] == pytest.approx(8 / 15, abs=1e-12)
    assert summary["sample_ap"] == pytest.approx(7 / 12, abs=1e-12)
    assert summary["num_cases"] == 3 and summary["num_anomalous_cases"] == 2 and summary["num_voxels"] == 12
    assert "D" in summary["notes"][0]


def test_mood_evaluation_reads_scores_as_the_challenge_does_and_names_missing_files(tmp_path, capsys):
    assert challenge_scores(np.array([0.5, 0.50001]))[0] == challenge_scores(np.array([0.5, 0.50001]))[1]  # float16
    pred, labels = _hand_made(tmp_path, False)
    (pred / "sample" / "C.nii.gz.txt").unlink()
    assert evaluate_main(["-p", str(pred), "-g", str(labels), "--mood", "--disable_progress_bar"]) == 1
    err = capsys.readouterr().err
    assert "sample/C" in err and "--continue_prediction" in err
    assert evaluate_main(["-p", str(labels), "-g", str(labels), "--mood"]) == 1
    assert "--output_format mood" in capsys.readouterr().err
    assert evaluate_main(["-p", str(pred), "-g", str(labels), "--mood", "--threshold", "0.5"]) == 1
    assert "--threshold" in capsys.readouterr().err


# --------------------------------------------------------------------- end to end: uadnet_baseline --output_format mood
@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    from uadnet.cli.plan_and_preprocess import main as plan_main

    with uadnet_folders(tmp_path_factory, "mood") as folders:
        folder = make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=5, n_test=3, seed=3)
        # test_002 becomes a healthy case: the sample-level AP needs both kinds
        ref = sitk.ReadImage(str(folder / "labelsTs" / "test_002.nii.gz"))
        empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(ref).shape, np.uint8))
        empty.CopyInformation(ref)
        sitk.WriteImage(empty, str(folder / "labelsTs" / "test_002.nii.gz"))
        assert plan_main(["-d", "1", "-c", "2d", "-np", "1", "--no_preprocessing", "--disable_progress_bar",
                          "--device", "cpu"]) == 0
        yield folder, folders


def test_baseline_in_mood_format_then_evaluate_mood(planned, tmp_path, monkeypatch):
    from uadnet.cli.baseline import main as baseline_main

    folder, folders = planned
    for var, f in folders.items():
        monkeypatch.setenv(var, str(f))
    common = ["-d", "1", "-b", "intensity", "-i", str(folder / "imagesTs"), "--disable_progress_bar"]
    assert baseline_main([*common, "-o", str(tmp_path / "mood"), "--output_format", "mood"]) == 0
    assert baseline_main([*common, "-o", str(tmp_path / "plain")]) == 0
    out = tmp_path / "mood"
    for case in ("test_000", "test_001", "test_002"):
        ref = sitk.ReadImage(str(folder / "imagesTs" / f"{case}_0000.nii.gz"))
        pixel = sitk.ReadImage(str(out / "pixel" / f"{case}.nii.gz"))
        assert pixel.GetSize() == ref.GetSize() and pixel.GetOrigin() == ref.GetOrigin()
        values = sitk.GetArrayFromImage(pixel)
        assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
        assert 0 <= float((out / "sample" / f"{case}.nii.gz.txt").read_text(encoding="utf-8")) <= 1
        plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain" / f"{case}_mask.nii.gz")))
        np.testing.assert_array_equal(values >= 0.5, plain == 1)  # 0.5 = the calibrated voxel threshold
    summary = evaluate_mood(out, folder / "labelsTs", disable_progress_bar=True, verbose=False)
    assert summary["num_cases"] == 3 and summary["num_anomalous_cases"] == 2
    assert 0 < summary["pixel_ap"] <= 1 and 0 < summary["sample_ap"] <= 1
    assert not (folder / "imagesTs" / "pixel").exists()  # the input folder is never written to
