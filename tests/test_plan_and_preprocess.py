"""``uadnet_plan_and_preprocess`` end to end on tiny datasets: outputs, resumption, hand edits, bad input."""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from tests.synthetic import make_dataset
from uadnet.cli.plan_and_preprocess import main
from uadnet.plans import Plans


def run(*args):
    return main([*args, "--disable_progress_bar", "--device", "cpu"])


def test_outputs_resume_and_hand_edits(uadnet_env, capsys):
    raw, pre, _ = uadnet_env
    make_dataset(raw, dataset_id=1, kind="3d_iso", n_cases=5)
    assert run("-d", "1", "-np", "1", "--verify_dataset_integrity") == 0
    out = pre / "Dataset001_3d_iso"
    plans = Plans.load(out / "uadnet_plans.json")
    assert set(plans.configurations) == {"2d", "3d"}
    fp = json.loads((out / "dataset_fingerprint.json").read_text())
    assert fp["num_cases"] == 5
    assert (out / "dataset_fingerprint.png").stat().st_size > 10_000
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 5
    assert sorted(functools.reduce(operator.iadd, (s["val"] for s in splits), [])) == [f"case_{i:03d}" for i in range(5)]
    for cfg in ("2d", "3d"):
        folder = out / plans.configurations[cfg].data_identifier
        for i in range(5):
            data = np.load(folder / f"case_{i:03d}.npy", mmap_mode="r")
            fg = np.load(folder / f"case_{i:03d}_fg.npy")
            props = json.loads((folder / f"case_{i:03d}.json").read_text())
            assert data.shape[1:] == fg.shape == tuple(props["shape_after_resampling"])
    assert "OK" in capsys.readouterr().out

    # a second run does nothing: same files, untouched
    npy = out / "uadnetPlans_2d" / "case_000.npy"
    mtime = os.stat(npy).st_mtime_ns
    assert run("-d", "Dataset001_3d_iso", "-np", "1") == 0
    assert os.stat(npy).st_mtime_ns == mtime
    assert "0 case(s) preprocessed, 5 up to date" in capsys.readouterr().out

    # an interrupted run (a case's JSON missing) redoes only that case
    (out / "uadnetPlans_2d" / "case_003.json").unlink()
    run("-d", "1", "-np", "1", "-c", "2d")
    assert "1 case(s) preprocessed, 4 up to date" in capsys.readouterr().out

    # a hand edit of the plans is kept and changes the preprocessing
    d = json.loads((out / "uadnet_plans.json").read_text())
    d["configurations"]["2d"]["spacing"] = [1.0, 2.0, 2.0]
    (out / "uadnet_plans.json").write_text(json.dumps(d))
    # a user-provided split is honoured
    custom = [{"train": ["case_000", "case_001", "case_002"], "val": ["case_003", "case_004"]}]
    (out / "splits_final.json").write_text(json.dumps(custom))
    assert run("-d", "1", "-np", "1", "-c", "2d") == 0
    assert "5 case(s) preprocessed" in capsys.readouterr().out
    props = json.loads((out / "uadnetPlans_2d" / "case_000.json").read_text())
    assert props["spacing_after_resampling"][1:] == [2.0, 2.0]
    assert json.loads((out / "splits_final.json").read_text()) == custom
    assert Plans.load(out / "uadnet_plans.json").configurations["2d"].spacing == [1.0, 2.0, 2.0]


def test_parallel_workers_and_anisotropic_2d_png(uadnet_env):
    raw, pre, _ = uadnet_env
    make_dataset(raw, dataset_id=2, kind="3d_aniso", n_cases=3)
    make_dataset(raw, dataset_id=3, kind="rgb_png", n_cases=3)
    assert run("-d", "2", "3", "-np", "2") == 0
    aniso = Plans.load(pre / "Dataset002_3d_aniso" / "uadnet_plans.json")
    assert set(aniso.configurations) == {"2d"}
    rgb = Plans.load(pre / "Dataset003_rgb_png" / "uadnet_plans.json")
    assert set(rgb.configurations) == {"2d"} and [n.scheme for n in rgb.normalization] == ["rgb"] * 3
    data = np.load(pre / "Dataset003_rgb_png" / "uadnetPlans_2d" / "case_000.npy")
    assert data.shape[:2] == (3, 1)


def test_nnunet_raw_folder_is_accepted(uadnet_env):
    raw, pre, _ = uadnet_env
    folder = make_dataset(raw, dataset_id=4, kind="3d_iso", n_cases=3)
    (folder / "labelsTr").mkdir()
    for f in (folder / "imagesTr").iterdir():
        img = sitk.ReadImage(str(f))
        lab = sitk.Cast(img > 150, sitk.sitkUInt8) * 2
        sitk.WriteImage(lab, str(folder / "labelsTr" / f.name.replace("_0000", "")))
    d = json.loads((folder / "dataset.json").read_text())
    d = {"channel_names": d["channel_names"], "labels": {"background": 0, "tumor": [1, 2]}, "numTraining": 3,
         "file_ending": ".nii.gz", "overwrite_image_reader_writer": "NibabelIOWithReorient"}
    (folder / "dataset.json").write_text(json.dumps(d))
    assert run("-d", "4", "-np", "1", "--verify_dataset_integrity") == 0
    assert Plans.load(pre / "Dataset004_3d_iso" / "uadnet_plans.json").image_reader_writer == "NibabelIOWithReorient"


def test_broken_dataset_lists_problems_and_fails(uadnet_env, capsys):
    raw, pre, _ = uadnet_env
    folder = make_dataset(raw, dataset_id=5, kind="2ch", n_cases=3)
    (folder / "imagesTr" / "case_001_0001.nii.gz").unlink()
    (folder / "imagesTr" / "case_002_0000.nii.gz").write_bytes(b"not an image")
    assert run("-d", "5", "-np", "1", "--verify_dataset_integrity") == 1
    err = capsys.readouterr().err
    assert "case_001_0001.nii.gz" in err and "case_002_0000.nii.gz" in err
    assert not (pre / "Dataset005_2ch" / "uadnet_plans.json").exists()
    assert run("-d", "77", "-np", "1") == 1
    assert "no folder Dataset077" in capsys.readouterr().err


def test_console_script_entry_point(uadnet_env):
    """The command line works as a separate process (as a user calls it)."""
    raw, pre, _ = uadnet_env
    make_dataset(raw, dataset_id=6, kind="2d_png", n_cases=3)
    exe = shutil.which("uadnet_plan_and_preprocess")
    cmd = [exe] if exe else [sys.executable, "-m", "uadnet.cli.plan_and_preprocess"]
    res = subprocess.run([*cmd, "-d", "6", "-np", "1", "--disable_progress_bar", "--device", "cpu"],
                         capture_output=True, encoding="utf-8", errors="replace", timeout=300, check=False,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert res.returncode == 0, res.stderr
    assert "Plans for Dataset006_2d_png" in res.stdout
    assert (pre / "Dataset006_2d_png" / "uadnetPlans_2d" / "case_002.npy").is_file()
