"""Model zips: export → install into an empty results folder → bit-identical maps; tampered zips refused with nothing
written; no overwrite without --overwrite; uadnet_predict --model_folder from a zip without any UADNET_* variable."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uadnet.cli.export_model_to_zip import main as export_main
from uadnet.cli.install_pretrained_model_from_zip import main as install_main
from uadnet.cli.predict import main as predict_main
from uadnet.inference.model_zip import MANIFEST

QUIET = ["--disable_progress_bar", "--precision", "fp32"]
DATASET = "Dataset001_3d_iso"
FOLDER = "cold_ensemble__uadnet_plans__2d"
VARS = ("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS")


@pytest.fixture(scope="module")
def exported(tiny_trained_model, tmp_path_factory):
    """The tiny model exported with -d (from its results folder), and its maps predicted from that folder."""
    root = tmp_path_factory.mktemp("model_zip")
    with pytest.MonkeyPatch.context() as mp:
        for var, key in zip(VARS, ("raw", "preprocessed", "results")):
            mp.setenv(var, str(tiny_trained_model[key]))
        assert export_main(["-d", DATASET, "-o", str(root / "model.zip")]) == 0
        assert predict_main(["-i", str(tiny_trained_model["test_images"]), "-o", str(root / "original"), "-d",
                             DATASET, *QUIET]) == 0
    return {**tiny_trained_model, "zip": root / "model.zip", "original": root / "original"}


@pytest.fixture
def no_env(tmp_path, monkeypatch):
    """No UADNET_* variable and a fresh HOME (the default folders would be created there if anything used them)."""
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def _assert_same_predictions(a: Path, b: Path) -> None:
    maps_a, maps_b = _maps(a), _maps(b)
    assert sorted(maps_a) == sorted(maps_b) and len(maps_a) == 4  # 2 cases × (map, mask)
    for name in maps_a:
        np.testing.assert_array_equal(maps_a[name], maps_b[name], err_msg=name)
    assert (a / "scores.csv").read_bytes() == (b / "scores.csv").read_bytes()


def test_zip_holds_what_prediction_needs_and_a_manifest(exported):
    with zipfile.ZipFile(exported["zip"]) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
    prefix = f"{DATASET}/{FOLDER}/"
    fold = ["checkpoint_final.pth", "calibration.json", "postprocessing.json", "uadnet_plans.json", "progress.png",
            "training_log.txt"]
    expected = {prefix + n for n in ("uadnet_plans.json", "dataset.json", "dataset_fingerprint.json")}
    assert names == expected | {prefix + "fold_0/" + n for n in fold} | {MANIFEST}  # no latest/best checkpoints
    assert manifest["method"] == "cold_ensemble" and manifest["configuration"] == "2d" and manifest["folds"] == ["0"]
    assert manifest["uadnet_version"] and manifest["torch_version"] and manifest["checkpoint"] == "checkpoint_final.pth"
    assert set(manifest["files"]) == names - {MANIFEST}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    figures = manifest["healthy_validation"]["0"]
    assert figures["iteration"] == 3 and set(figures["voxel_thresholds"]) == {"0.001", "0.01", "0.05"}
    assert "best_validation_ap" in figures and figures["case_threshold"] > 0


def test_install_into_an_empty_results_folder_gives_bit_identical_maps(exported, no_env, tmp_path, monkeypatch,
                                                                      capsys):
    results = tmp_path / "results"
    monkeypatch.setenv("UADNET_RESULTS", str(results))
    assert install_main([str(exported["zip"])]) == 0
    installed = results / DATASET / FOLDER
    assert (installed / "fold_0" / "checkpoint_final.pth").is_file() and (installed / MANIFEST).is_file()
    assert [p.name for p in (results / DATASET).iterdir()] == [FOLDER]  # no temporary folder left
    out = tmp_path / "out"
    assert predict_main(["-i", str(exported["test_images"]), "-o", str(out), "-d", DATASET, *QUIET]) == 0
    _assert_same_predictions(exported["original"], out)
    # a second install is refused unless --overwrite, and the installed model is untouched
    before = (installed / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns
    capsys.readouterr()
    assert install_main([str(exported["zip"])]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (installed / "fold_0" / "checkpoint_final.pth").stat().st_mtime_ns == before
    assert install_main([str(exported["zip"]), "--overwrite"]) == 0
    assert [p.name for p in (results / DATASET).iterdir()] == [FOLDER]
    assert not no_env.exists()


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None], manifest_extra: dict | None = None) -> Path:
    """A copy of the zip with members replaced (bytes), removed (None) or added; the manifest can list extra
    entries (with their true hashes, so that only the path check can refuse them)."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members[MANIFEST])
    manifest["files"].update(manifest_extra or {})
    members[MANIFEST] = json.dumps(manifest).encode()
    for name, data in change.items():
        members.pop(name, None) if data is None else members.__setitem__(name, data)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def _flip_a_byte_in_the_file(src: Path, dst: Path, member: str, at_start: bool = False) -> Path:
    """One changed byte inside a member's stored data (the raw zip file edited, as a damaged download would be): in
    the middle (a CRC mismatch or a damaged deflate stream, by where it lands) or the first (``at_start``: deflate's
    first block header, whose type then reads as the reserved 11 — always a damaged stream)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    if at_start:
        data[start] |= 0b110
    else:
        data[start + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def test_tampered_zips_are_refused_and_nothing_is_written(exported, no_env, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    monkeypatch.setenv("UADNET_RESULTS", str(results))
    src, prefix = exported["zip"], f"{DATASET}/{FOLDER}/"
    calibration = prefix + "fold_0/calibration.json"
    with zipfile.ZipFile(src) as zf:
        changed = bytearray(zf.read(calibration))
    changed[10] ^= 1
    evil = {"sha256": "0" * 64, "bytes": 4}
    cases = {
        "byte_in_file": (_flip_a_byte_in_the_file(src, tmp_path / "a.zip", prefix + "fold_0/checkpoint_final.pth"),
                         "checkpoint_final.pth"),
        "deflate_header": (_flip_a_byte_in_the_file(src, tmp_path / "a2.zip", prefix + "fold_0/checkpoint_final.pth",
                                                    at_start=True), "checkpoint_final.pth"),
        "byte_in_member": (_rewrite(src, tmp_path / "b.zip", {calibration: bytes(changed)}), "sha256"),
        "dotdot": (_rewrite(src, tmp_path / "c.zip", {"../evil": b"evil"}, {"../evil": evil}), "outside"),
        "dotdot_inside": (_rewrite(src, tmp_path / "d.zip", {prefix + "../../evil": b"evil"},
                                   {prefix + "../../evil": evil}), "outside"),
        "absolute": (_rewrite(src, tmp_path / "e.zip", {"/tmp/evil": b"evil"}, {"/tmp/evil": evil}), "outside"),
        "unlisted": (_rewrite(src, tmp_path / "f.zip", {prefix + "extra.py": b"import os"}), "not in manifest.json"),
        "missing": (_rewrite(src, tmp_path / "g.zip", {calibration: None}), "missing from the zip"),
        "not_a_zip": (tmp_path / "h.zip", "not a readable zip"),
    }
    (tmp_path / "h.zip").write_bytes(b"PK not really")
    for label, (path, message) in cases.items():
        capsys.readouterr()
        assert install_main([str(path)]) == 1, label
        err = capsys.readouterr().err
        assert message in err and str(path) in err and len(err.strip().splitlines()) == 1, (label, err)
        assert not results.exists(), label  # nothing written, not even the results folder
        assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
        # uadnet_predict --model_folder refuses it the same way, before scoring anything
        assert predict_main(["-i", str(exported["test_images"]), "-o", str(tmp_path / "out"), "--model_folder",
                             str(path), *QUIET]) == 1
        assert message in capsys.readouterr().err and not (tmp_path / "out").exists(), label


def test_predict_from_a_zip_or_a_model_folder_without_environment_variables(exported, no_env, tmp_path,
                                                                            monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the zip is extracted to
    for label, model in (("zip", exported["zip"]), ("folder", exported["model_folder"])):
        out = tmp_path / label
        assert predict_main(["-i", str(exported["test_images"]), "-o", str(out), "--model_folder", str(model),
                             *QUIET]) == 0
        _assert_same_predictions(exported["original"], out)
        record = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
        assert record["method"] == "cold_ensemble" and record["configuration"] == "2d"
    assert "model_zip" in json.loads((tmp_path / "zip" / "prediction.json").read_text(encoding="utf-8"))["settings"][
        "extra"]
    assert not any(scratch.iterdir())  # the extracted copy is removed
    assert not no_env.exists()


def test_clear_errors_for_missing_folds_and_bad_arguments(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UADNET_RESULTS", str(exported["results"]))
    out = tmp_path / "m.zip"
    assert export_main(["--model_folder", str(exported["model_folder"]), "-f", "3", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "fold_3/checkpoint_final.pth is missing" in err and f"uadnet_train {DATASET} 3" in err
    assert not out.exists() and not list(tmp_path.iterdir())
    assert export_main(["--model_folder", str(exported["model_folder"]), "-o", str(tmp_path / "m.tar")]) == 1
    assert "must end in .zip" in capsys.readouterr().err
    assert export_main(["-d", DATASET, "-c", "3d", "-o", str(out)]) == 1
    assert "uadnet_train" in capsys.readouterr().err
    for argv in ([], ["-d", DATASET, "--model_folder", str(exported["model_folder"])]):
        with pytest.raises(SystemExit) as e:
            export_main([*argv, "-o", str(out)])
        assert e.value.code == 2
    inp = ["-i", str(exported["test_images"]), "-o", str(tmp_path / "o")]
    for argv in (inp, [*inp, "--model_folder", str(exported["zip"]), "-m", "cold_ensemble"],
                 [*inp, "--model_folder", str(exported["zip"]), "-d", DATASET]):
        with pytest.raises(SystemExit) as e:
            predict_main(argv)
        assert e.value.code == 2
    assert predict_main([*inp, "--model_folder", str(exported["model_folder"]), "-c", "3d", *QUIET]) == 1
    assert "holds configuration 2d, not 3d" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
