"""uadnet_predict: exact export geometry, sharding, continue after a kill, bad inputs, and an end-to-end run
(plan → train → predict → evaluate) that finds an inserted bright lesion."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import skimage.io

import uadnet
from tests.synthetic import make_dataset, uadnet_folders, write_sitk
from uadnet.cli.evaluate import main as evaluate_main
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.predict import main as predict_main
from uadnet.cli.train import main as train_main
from uadnet.inference.predictor import Predictor

FAST = ["--precision", "fp32", "-np", "0", "--disable_progress_bar"]
QUIET = ["--disable_progress_bar", "--precision", "fp32"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Five tiny datasets (isotropic 3D with test cases, anisotropic 3D, rotated 2-channel 3D, grey 2D PNG, RGB PNG
    with one file per case), each planned and trained briefly on fold 0; the isotropic one also on fold 1 (briefly: it
    only has to differ, for the ensembling), its fold 0 long enough to learn."""
    with uadnet_folders(tmp_path_factory, "predict") as folders:
        for i, kind in enumerate(("3d_iso", "3d_aniso", "2ch", "2d_png", "rgb_png"), start=1):
            make_dataset(folders["UADNET_RAW"], dataset_id=i, kind=kind, n_cases=6 if i == 1 else 4,
                         n_test=4 if i == 1 else 2, seed=i)
            assert plan_main(["-d", str(i), "-c", "2d", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
            if i == 1:  # the end-to-end test below: the restorer's residual alone must find the lesion
                plans = folders["UADNET_PREPROCESSED"] / "Dataset001_3d_iso" / "uadnet_plans.json"
                edited = json.loads(plans.read_text(encoding="utf-8"))
                edited["configurations"]["2d"]["inference"]["intensity_novelty"] = False
                plans.write_text(json.dumps(edited, indent=2), encoding="utf-8")
            for fold in ("0", "1") if i == 1 else ("0",):
                n = "120" if (i, fold) == (1, "0") else "3"
                assert train_main([str(i), fold, "--iterations", n, "--validation_every", n, *FAST]) == 0
        yield folders


def _raw(folders, i: int, kind: str) -> Path:
    return folders["UADNET_RAW"] / f"Dataset{i:03d}_{kind}"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("i,kind", [(2, "3d_aniso"), (3, "2ch"), (4, "2d_png"), (5, "rgb_png")])
def test_maps_and_masks_lie_exactly_on_the_input_grid(paths_env, tmp_path, i, kind):
    inp = _raw(paths_env, i, kind) / "imagesTs"
    before = _snapshot(inp)
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", str(i), "--save_restorations", *QUIET]) == 0
    assert _snapshot(inp) == before  # the input folder is never written to
    for case in ("test_000", "test_001"):
        if kind.endswith("png"):  # RGB: one file (y, x, 3) per case, one map (y, x)
            image = skimage.io.imread(inp / f"{case}_0000.png")
            assert image.ndim == (3 if kind == "rgb_png" else 2)
            amap = skimage.io.imread(out / f"{case}.tif")
            mask = skimage.io.imread(out / f"{case}_mask.tif")
            assert amap.shape == mask.shape == image.shape[:2] and amap.dtype == np.float32
            assert np.isfinite(amap).all() and amap.max() > 0
            restored = skimage.io.imread(out / f"{case}_restoration_0000.tif")
            assert restored.shape == image.shape[:2]
            continue
        ref = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        for suffix in ("", "_mask", "_restoration_0000"):
            img = sitk.ReadImage(str(out / f"{case}{suffix}.nii.gz"))
            assert img.GetSize() == ref.GetSize()
            np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
            np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
        image = sitk.GetArrayFromImage(ref)
        restored = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_restoration_0000.nii.gz")))
        inside = image > 0  # a barely trained residual restorer is near the identity, in the input's units
        assert np.median(np.abs(restored - image)[inside]) < 0.1 * image.max()
        amap = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        assert amap.dtype == np.float32 and np.isfinite(amap).all() and amap.max() > 0
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_mask.nii.gz")))
        threshold = json.loads((out / "prediction.json").read_text(encoding="utf-8"))["voxel_threshold"]
        np.testing.assert_array_equal(mask, amap >= threshold)
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    assert [r["case"] for r in rows] == ["test_000", "test_001"] and all(float(r["score"]) >= 0 for r in rows)


def test_sharded_prediction_equals_unsharded_and_folds_are_ensembled(paths_env, tmp_path):
    inp = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert predict_main(["-i", str(inp), "-o", str(whole), "-d", "1", *QUIET]) == 0
    for k in ("0", "1"):
        assert predict_main(["-i", str(inp), "-o", str(parts), "-d", "1", "--num_parts", "2", "--part_id", k,
                             *QUIET]) == 0
    assert (whole / "scores.csv").read_text(encoding="utf-8") == (parts / "scores.csv").read_text(encoding="utf-8")
    for case in ("test_000", "test_001", "test_002", "test_003"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(whole / f"{case}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(parts / f"{case}.nii.gz")))
        np.testing.assert_array_equal(a, b)
    info = json.loads((whole / "prediction.json").read_text(encoding="utf-8"))
    assert info["folds"] == ["0", "1"] and info["uadnet_version"] == uadnet.__version__ and info["plans_uadnet_version"]
    # the pipelined loop (loading ahead, exporting behind: the default on a GPU) writes exactly the same
    from uadnet.inference.folder_runner import FolderRun, run_folder
    from uadnet.inference.predictor import PredictionSettings

    piped = tmp_path / "piped"
    predictor = Predictor(PredictionSettings(inp, piped, 1, progress_bar=False))
    assert run_folder(predictor, FolderRun(inp, piped, progress_bar=False, prefetch=2)) == 0
    for case in ("test_000", "test_001", "test_002", "test_003"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(piped / f"{case}.nii.gz"))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(whole / f"{case}.nii.gz"))))
    single = tmp_path / "fold0"
    assert predict_main(["-i", str(inp), "-o", str(single), "-d", "1", "-f", "0", *QUIET]) == 0
    f0 = sitk.GetArrayFromImage(sitk.ReadImage(str(single / "test_000.nii.gz")))
    assert not np.array_equal(f0, sitk.GetArrayFromImage(sitk.ReadImage(str(whole / "test_000.nii.gz"))))


def test_continue_prediction_after_a_kill_finishes_the_rest(paths_env, tmp_path, monkeypatch):
    inp, out = _raw(paths_env, 1, "3d_iso") / "imagesTs", tmp_path / "out"
    original, calls = Predictor.score_prepared, []

    def dies_on_third(self, prepared):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, prepared)

    monkeypatch.setattr(Predictor, "score_prepared", dies_on_third)
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 130  # Ctrl-C: one line
    monkeypatch.setattr(Predictor, "score_prepared", original)
    first = (out / "test_000.nii.gz").stat().st_mtime_ns
    assert not (out / "test_002.nii.gz").exists()
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", "--continue_prediction", *QUIET]) == 0
    assert (out / "test_000.nii.gz").stat().st_mtime_ns == first  # finished cases are not redone
    assert len(list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))) == 4
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bad_cases_are_reported_and_skipped_and_inputs_protected(paths_env, tmp_path, capsys):
    src = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    inp = tmp_path / "in"
    shutil.copytree(src, inp)
    (inp / "test_001_0000.nii.gz").write_bytes(b"not an image")
    shutil.copyfile(inp / "test_002_0000.nii.gz", inp / "test_002_0001.nii.gz")  # one channel too many
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 1
    text = capsys.readouterr().out
    assert "FAILED test_001" in text and "FAILED test_002" in text and "channel" in text
    assert (out / "test_000.nii.gz").is_file() and (out / "test_003.nii.gz").is_file()
    assert not (out / "test_001.nii.gz").exists()
    assert predict_main(["-i", str(inp), "-o", str(inp), "-d", "1", *QUIET]) == 1
    assert "must not be the input folder" in capsys.readouterr().err
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "3", *QUIET]) == 1
    assert "fold_3" in capsys.readouterr().err
    # thresholds belong to the checkpoint they were calibrated for (calibration_<x>.json for checkpoint_<x>.pth)
    fold = next(Path(paths_env["UADNET_RESULTS"]).glob("Dataset001_3d_iso/*/fold_0"))
    shutil.copyfile(fold / "checkpoint_final.pth", fold / "checkpoint_other.pth")
    shutil.copyfile(fold / "calibration.json", fold / "calibration_other.json")
    try:
        assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-chk", "checkpoint_other.pth", *QUIET]) == 1
    finally:
        (fold / "checkpoint_other.pth").unlink()
        (fold / "calibration_other.json").unlink()
    assert "calibrated for checkpoint_final.pth, not checkpoint_other.pth" in capsys.readouterr().err


def test_end_to_end_an_inserted_bright_lesion_is_found(paths_env, tmp_path):
    """Healthy-trained model (fold 0, the restorer's residual alone: these plans leave out the intensity-novelty
    term), test cases with a bright sphere (radius 2 mm) in the outer tissue: pooled voxel AP must be high and each
    lesion's mean score far above the rest of its brain — levels a restorer trained for 3 iterations misses."""
    raw = _raw(paths_env, 1, "3d_iso")
    inp, labels, out = tmp_path / "in", tmp_path / "labels", tmp_path / "out"
    inp.mkdir()
    labels.mkdir()
    prevalence = []
    offsets = [(0, 8, 0), (0, 0, -8), (3, -7, 0)]  # mm from the centre: outside the bright core (radius ≈ 5 mm)
    for k, case in enumerate(("test_000", "test_001", "test_002", "test_003")):
        ref = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        img = sitk.GetArrayFromImage(ref).astype(np.float32)
        lesion = np.zeros(img.shape, np.uint8)
        if k < 3:  # test_003 stays healthy
            zz, yy, xx = np.meshgrid(*[np.arange(n) for n in img.shape], indexing="ij")
            centre = np.array(img.shape) // 2 + np.array(offsets[k])
            lesion = (((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 4).astype(np.uint8)
            img = img + 150.0 * lesion
            prevalence.append(lesion.mean())
        spacing, origin, direction = ref.GetSpacing()[::-1], ref.GetOrigin(), ref.GetDirection()
        write_sitk(img, inp / f"{case}_0000.nii.gz", spacing, origin, direction)
        write_sitk(lesion, labels / f"{case}.nii.gz", spacing, origin, direction)
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 0  # the trained fold
    assert evaluate_main(["-p", str(out), "-g", str(labels), "--disable_progress_bar"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    pooled = summary["pooled"]
    # 120 iterations: AP 1.00, each lesion ~7x its brain; 3 iterations (an untrained restorer): AP 0.37, ~2.4x
    assert pooled["ap"] > 0.8 and pooled["auroc"] > 0.99 and pooled["ap"] > 100 * np.mean(prevalence), pooled
    for case in ("test_000", "test_001", "test_002"):  # every lesion stands out of its own brain
        amap = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz"))) > 0
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))) > 0
        assert amap[lesion].mean() > 4 * amap[brain & ~lesion].mean(), case


def test_onnxruntime_backend_gives_the_torch_maps(paths_env, tmp_path):
    """--backend onnxruntime: the fold's restorer is exported once beside its checkpoint, checked against torch, and
    the fp32 maps agree with torch's within 1e-4; the export is reused by the next run."""
    pytest.importorskip("onnxruntime")
    inp = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    common = ["-i", str(inp), "-d", "1", "-f", "0", "--precision", "fp32", *QUIET]
    assert predict_main([*common, "-o", str(tmp_path / "torch")]) == 0
    assert predict_main([*common, "-o", str(tmp_path / "onnx"), "--backend", "onnxruntime"]) == 0
    fold = paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d" / "fold_0"
    exports = list(fold.glob("restorer_*.onnx"))
    assert len(exports) == 1
    stamp = exports[0].stat().st_mtime_ns
    for case in ("test_000", "test_001", "test_002", "test_003"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "torch" / f"{case}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "onnx" / f"{case}.nii.gz")))
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    info = json.loads((tmp_path / "onnx" / "prediction.json").read_text(encoding="utf-8"))
    assert info["backend_per_fold"] == {"0": "onnxruntime"}
    assert predict_main([*common, "-o", str(tmp_path / "auto"), "--backend", "auto"]) == 0
    assert exports[0].stat().st_mtime_ns == stamp  # exported once per checkpoint
    assert json.loads((tmp_path / "auto" / "prediction.json").read_text())["backend_per_fold"]["0"] in (
        "torch", "onnxruntime")


def test_openvino_backend_gives_the_torch_maps(paths_env, tmp_path):
    """--backend openvino runs the same cached ONNX export: fp32 maps within 1e-4 of torch's; bf16 (where OpenVINO
    offers it) is checked against torch before use and gives finite maps of the same grid."""
    pytest.importorskip("openvino")
    inp = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    common = ["-i", str(inp), "-d", "1", "-f", "0", *QUIET]
    assert predict_main([*common, "--precision", "fp32", "-o", str(tmp_path / "torch")]) == 0
    assert predict_main([*common, "--precision", "fp32", "-o", str(tmp_path / "ov"), "--backend", "openvino"]) == 0
    assert predict_main([*common, "--precision", "bf16", "-o", str(tmp_path / "ov16"), "--backend", "openvino"]) == 0
    for case in ("test_000", "test_001", "test_002", "test_003"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "torch" / f"{case}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ov" / f"{case}.nii.gz")))
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
        c = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ov16" / f"{case}.nii.gz")))
        assert c.shape == a.shape and np.isfinite(c).all()
    info = json.loads((tmp_path / "ov" / "prediction.json").read_text(encoding="utf-8"))
    assert info["backend_per_fold"] == {"0": "openvino"}
    fold = paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d" / "fold_0"
    assert len(list(fold.glob("restorer_*.onnx"))) == 1  # one export per checkpoint, shared by both runtimes


def test_an_export_that_disagrees_with_torch_is_refused(paths_env):
    """The check before use: a restorer whose outputs differ from the network's beyond the tolerance is refused,
    naming the export and the fix."""
    import torch

    from uadnet.inference.backends import BackendError, _ExportedRestorer, check_against_torch

    net = torch.nn.Conv2d(1, 1, 3, padding=1)

    class Off(_ExportedRestorer):
        backend = "onnxruntime"

        def _run(self, feeds):
            with torch.no_grad():
                return net(torch.from_numpy(feeds[0])).numpy() + 1e-3  # a wrong graph, slightly

    with pytest.raises(BackendError, match=r"restorer_x\.onnx .* differs .* delete it"):
        check_against_torch(net, Off(Path("restorer_x.onnx")), [8, 8])
    Off.precision = "bf16"  # within the bf16 tolerance
    assert check_against_torch(net, Off(Path("restorer_x.onnx")), [8, 8]) < 2e-3


def test_missing_onnxruntime_names_the_extra(monkeypatch, capsys, tmp_path, paths_env):
    import sys

    import torch

    from uadnet.inference.backends import BackendError, choose_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(BackendError, match=rf"--backend {name} needs .*pip install -e \".\[deploy\]\""):
            choose_backend(name, torch.device("cpu"), "fp32")
    assert choose_backend("auto", torch.device("cpu"), "fp32") == "torch"
    inp = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    assert predict_main(["-i", str(inp), "-o", str(tmp_path / "o"), "-d", "1", "--backend", "onnxruntime",
                         *QUIET]) == 1
    assert "deploy" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_broken_onnx_export_names_the_file(paths_env, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from uadnet.inference.backends import checkpoint_digest

    fold = paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d" / "fold_1"
    broken = fold / f"restorer_{checkpoint_digest(fold / 'checkpoint_final.pth')}.onnx"
    broken.write_bytes(b"not an onnx model")
    inp = _raw(paths_env, 1, "3d_iso") / "imagesTs"
    try:
        assert predict_main(["-i", str(inp), "-o", str(tmp_path / "o"), "-d", "1", "-f", "1", "--backend",
                             "onnxruntime", *QUIET]) == 1
    finally:
        broken.unlink()
    err = capsys.readouterr().err
    assert broken.name in err and "delete it" in err
