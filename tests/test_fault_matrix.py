"""The fault matrix: bad inputs, bad command use and crashes that once gave silently wrong results or lost data.

Each case fails without its fix: RGB one-file photographs refused at prediction, a stray ``.nii`` read instead of
the ``.nii.gz``, truncated NIfTI files read as zeros, output names of two cases colliding, edited plans breaking
folds already trained, unverified writes on a full disk, data-loading workers outliving a killed trainer, NaN and
empty scans, shard options with confusing messages. Geometry, resume and pickle rows live in test_prediction.py,
test_training.py and test_file_io.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import make_dataset, uadnet_folders, write_sitk
from uadnet.cli.baseline import main as baseline_main
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.predict import main as predict_main
from uadnet.cli.train import main as train_main
from uadnet.dataset.raw_dataset import list_cases
from uadnet.imageio import ImageReadError, SimpleITKIO
from uadnet.inference.export import output_name_collisions, read_case
from uadnet.plans import PLANS_FILE
from uadnet.utilities.checkpoints import LATEST, PREVIOUS, CheckpointError, load_checkpoint, save_checkpoint

QUIET = ["--disable_progress_bar", "--precision", "fp32"]
TRAIN = ["--iterations", "3", "--validation_every", "3", "-np", "0", *QUIET]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny 3D dataset (fold 0 trained briefly) and an RGB PNG dataset with one file per case (planned)."""
    with uadnet_folders(tmp_path_factory, "faults") as folders:
        make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=4, n_test=2, seed=1)
        make_dataset(folders["UADNET_RAW"], dataset_id=2, kind="rgb_png", n_cases=4, n_test=2, seed=2)
        for d in ("1", "2"):
            assert plan_main(["-d", d, "-c", "2d", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
        assert train_main(["1", "0", *TRAIN]) == 0
        yield folders


def _checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _test_images(env) -> Path:
    return env["UADNET_RAW"] / "Dataset001_3d_iso" / "imagesTs"


def _copy_inputs(env, tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    for p in _test_images(env).iterdir():
        (inp / p.name).write_bytes(p.read_bytes())
    return inp


# ------------------------------------------------------------------------------------------------ readers
def test_a_stray_nii_next_to_the_nii_gz_is_refused_not_read(paths_env, tmp_path, capsys):
    inp = _copy_inputs(paths_env, tmp_path)
    image = sitk.ReadImage(str(inp / "test_000_0000.nii.gz"))
    sitk.WriteImage(image * 0 + 7, str(inp / "test_000_0000.nii"))  # SimpleITK would read this one instead
    with pytest.raises(ImageReadError, match="ambiguous.*test_000_0000.nii lies next to it"):
        SimpleITKIO().read_images([inp / "test_000_0000.nii.gz"])
    before = _checksums(inp)
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 1
    assert "FAILED test_000" in capsys.readouterr().out
    assert not (out / "test_000.nii.gz").exists() and (out / "test_001.nii.gz").is_file()
    assert _checksums(inp) == before


def test_truncated_nifti_files_are_refused_and_multi_member_gzip_is_read(tmp_path):
    rng = np.random.default_rng(0)
    write_sitk(rng.normal(size=(6, 20, 30)).astype(np.float32), tmp_path / "full.nii.gz", (1.0, 1.0, 1.0))
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])  # SimpleITK alone fills the rest with zeros
    with pytest.raises(ImageReadError, match="truncated"):
        SimpleITKIO().read_images([tmp_path / "cut.nii.gz"])
    raw = gzip.decompress(data)
    (tmp_path / "cut.nii").write_bytes(raw[:-40])
    with pytest.raises(ImageReadError, match="truncated"):
        SimpleITKIO().read_images([tmp_path / "cut.nii"])
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))  # valid, unusual
    a, _ = SimpleITKIO().read_images([tmp_path / "two.nii.gz"])
    b, _ = SimpleITKIO().read_images([tmp_path / "full.nii.gz"])
    np.testing.assert_array_equal(a, b)


def test_a_write_that_cannot_be_read_back_never_reaches_its_name(tmp_path, monkeypatch):
    """A full disk: SimpleITK prints "wrote only 0 of N bytes" and returns; the output must not be renamed in."""
    real_write = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:60])

    io = SimpleITKIO()
    _, props = io.read_images([_write(tmp_path / "ref.nii.gz")])
    monkeypatch.setattr(sitk, "WriteImage", short_write)
    with pytest.raises(OSError, match="writing failed"):
        io.write(np.ones((4, 5, 6), np.float32), tmp_path / "map.nii.gz", props)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz"]  # no output, no temporary file


def _write(path: Path) -> Path:
    write_sitk(np.zeros((4, 5, 6), np.float32), path, (1.0, 1.0, 1.0))
    return path


# ---------------------------------------------------------------------------------------------- prediction
def test_rgb_photographs_in_one_file_per_case_train_predict_and_run_baselines(paths_env, tmp_path):
    raw = paths_env["UADNET_RAW"] / "Dataset002_rgb_png"
    assert train_main(["2", "0", *TRAIN]) == 0
    for command, out in ((predict_main, tmp_path / "model"), (baseline_main, tmp_path / "baseline")):
        extra = ["-b", "intensity"] if command is baseline_main else ["-f", "0", "--precision", "fp32"]
        assert command(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "2", *extra, "--disable_progress_bar"]) == 0
        assert sorted(p.name for p in (out / "per_case").iterdir()) == ["test_000.json", "test_001.json"]


def test_output_names_that_would_collide_are_refused_before_anything_is_written(paths_env, tmp_path, capsys):
    assert output_name_collisions(["a", "b", "b_mask", "B_restoration_0000"]) == [
        "B_restoration_0000 ↔ b (both would write b_restoration_0000…)", "b ↔ b_mask (both would write b_mask…)"]
    inp = _copy_inputs(paths_env, tmp_path)
    (inp / "test_000_mask_0000.nii.gz").write_bytes((inp / "test_001_0000.nii.gz").read_bytes())
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 1
    assert "test_000 ↔ test_000_mask" in capsys.readouterr().err
    assert not out.exists()


def test_nan_and_empty_scans_are_reported_not_scored(paths_env, tmp_path, capsys):
    nan = np.full((4, 5, 6), 50.0, np.float32)
    nan[1, 2, 3] = np.nan  # the NIfTI library reads NaN as 0; NRRD keeps it
    write_sitk(nan, tmp_path / "nan_0000.nrrd", (1.0, 1.0, 1.0))
    case = list_cases(tmp_path, ".nrrd").cases["nan"]
    with pytest.raises(ValueError, match="nan_0000.nrrd.*contains 1 NaN"):
        read_case(SimpleITKIO(), case, {"0": "MRI"})
    inp = _copy_inputs(paths_env, tmp_path)
    empty = sitk.ReadImage(str(inp / "test_000_0000.nii.gz")) * 0
    sitk.WriteImage(empty, str(inp / "test_000_0000.nii.gz"))
    out = tmp_path / "out"
    assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 1
    assert "FAILED test_000" in (text := capsys.readouterr().out) and "empty or constant" in text
    assert not list(out.glob("test_000*")) and (out / "per_case" / "test_001.json").is_file()
    assert [r.split(",")[0] for r in (out / "scores.csv").read_text().split()[1:]] == ["test_001"]


@pytest.mark.parametrize("args,message", [(["--num_parts", "0"], "--num_parts must be at least 1"),
                                          (["--num_parts", "5", "--part_id", "4"], "part 4 of 5 holds no case")])
def test_shard_options_get_clear_messages(paths_env, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert predict_main(["-i", str(_test_images(paths_env)), "-o", str(out), "-d", "1", "-f", "0", *args,
                         *QUIET]) == 1
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ training
def test_edited_plans_never_damage_folds_already_trained(paths_env, tmp_path, capsys):
    pre = paths_env["UADNET_PREPROCESSED"] / "Dataset001_3d_iso"
    model = paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d"
    original = (pre / PLANS_FILE).read_text(encoding="utf-8")
    saved = (model / PLANS_FILE).read_bytes()
    assert (model / "fold_0" / PLANS_FILE).read_bytes() == saved  # each fold keeps the plans it was trained with
    plans = json.loads(original)
    plans["configurations"]["2d"]["network"]["features_per_stage"] = [8, 16, 32, 32, 32][
        :len(plans["configurations"]["2d"]["network"]["features_per_stage"])]
    try:
        (pre / PLANS_FILE).write_text(json.dumps(plans), encoding="utf-8")
        assert train_main(["1", "1", *TRAIN]) == 1
        assert "-p uadnet_plans_v2" in capsys.readouterr().err
        assert train_main(["1", "0", "--c", *TRAIN]) == 1
        assert "restore those plans" in capsys.readouterr().err
        assert (model / PLANS_FILE).read_bytes() == saved and not (model / "fold_1").exists()
    finally:
        (pre / PLANS_FILE).write_text(original, encoding="utf-8")
    (model / PLANS_FILE).write_text(json.dumps(plans), encoding="utf-8")  # a hand-edited model folder
    try:
        assert predict_main(["-i", str(_test_images(paths_env)), "-o", str(tmp_path / "o"), "-d", "1", "-f", "0",
                             *QUIET]) == 1
        assert "the plans fold 0 was trained with" in capsys.readouterr().err
    finally:
        (model / PLANS_FILE).write_bytes(saved)


WORKER_SCRIPT = """
import os, sys, time
from uadnet.plans import Plans
from uadnet.corruption.registry import build_corruption
from uadnet.training.dataloading import make_training_pipeline
folder = sys.argv[1]
plans = Plans.load(os.path.join(folder, "uadnet_plans.json"))
pipeline = make_training_pipeline(folder, plans, "2d", ["case_000", "case_001"], build_corruption("dag", plans),
                                  num_workers=2, seed=0)
next(pipeline)
print(" ".join(str(p.pid) for p in pipeline._processes), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process liveness is read from /proc")
def test_data_loading_workers_exit_when_the_trainer_is_killed(paths_env):
    folder = paths_env["UADNET_PREPROCESSED"] / "Dataset001_3d_iso"
    proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_continue_with_more_iterations_extends_the_run_and_fewer_is_refused(paths_env, capsys):
    fold = paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d" / "fold_2"
    assert train_main(["1", "2", *TRAIN]) == 0
    assert train_main(["1", "2", "--c", "--iterations", "5", *TRAIN[2:]]) == 0
    assert "extending the run from 3 to 5 iterations" in capsys.readouterr().out
    assert load_checkpoint(fold / "checkpoint_final.pth")["iteration"] == 5
    assert train_main(["1", "2", "--c", "--iterations", "4", *TRAIN[2:]]) == 1
    assert "has already trained 5 iterations" in capsys.readouterr().err


def test_a_broken_latest_checkpoint_never_pushes_out_the_good_previous_one(tmp_path):
    save_checkpoint({"network": {}, "iteration": 1, "meta": {}}, tmp_path / LATEST, keep_previous=True)
    save_checkpoint({"network": {}, "iteration": 2, "meta": {}}, tmp_path / LATEST, keep_previous=True)
    (tmp_path / LATEST).write_bytes(b"truncated")  # a crash while the disk filled up
    save_checkpoint({"network": {}, "iteration": 3, "meta": {}}, tmp_path / LATEST, keep_previous=True)
    assert load_checkpoint(tmp_path / PREVIOUS)["iteration"] == 1
    assert load_checkpoint(tmp_path / LATEST)["iteration"] == 3


def test_a_step_size_outside_0_1_is_refused(paths_env, tmp_path, capsys):
    assert predict_main(["-i", str(_test_images(paths_env)), "-o", str(tmp_path / "o"), "-d", "1", "-f", "0",
                         "--step_size", "0", *QUIET]) == 1
    assert "--step_size must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["below_a_file", "read_only"])
def test_unwritable_output_folders_are_one_line_errors(paths_env, tmp_path, capsys, how):
    if how == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root may write into read-only folders")
        out = tmp_path / "ro" / "out"
        out.parent.mkdir()
        out.parent.chmod(0o500)
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    assert predict_main(["-i", str(_test_images(paths_env)), "-o", str(out), "-d", "1", "-f", "0", *QUIET]) == 1
    err = capsys.readouterr().err
    assert err.startswith("uadnet_predict: error:") and "Traceback" not in err and str(tmp_path) in err


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_planted_as_a_checkpoint_never_runs(tmp_path):
    import torch

    marker = tmp_path / "payload_ran"
    torch.save({"network": _Payload(marker), "iteration": 1, "meta": {}}, tmp_path / "checkpoint_final.pth")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "checkpoint_final.pth")
    assert not marker.exists()


def test_prediction_killed_hard_continues_to_byte_identical_outputs(paths_env, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(8):  # enough cases that the kill lands mid-folder
        src = _test_images(paths_env) / f"test_{k % 2:03d}_0000.nii.gz"
        (inp / f"case_{k}_0000.nii.gz").write_bytes(src.read_bytes())
    args = ["-i", str(inp), "-d", "1", "-f", "0", *QUIET]
    assert predict_main([*args, "-o", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "uadnet.cli.predict", *args, "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(out.glob("per_case/*.json"))) < 2:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(out.glob("per_case/*.json")))
    for k in [k for k in range(8) if not (out / "per_case" / f"case_{k}.json").exists()][:1]:
        (out / f".case_{k}.nii.gz.k1ll3d.nii.gz").write_bytes(b"half a map")  # as a kill during a write leaves it
    assert predict_main([*args, "-o", str(out), "--continue_prediction"]) == 0
    assert 0 < finished <= 8
    whole, killed = _checksums(tmp_path / "whole"), _checksums(out)
    del whole["prediction.json"], killed["prediction.json"]  # names the output folder and the settings
    assert killed == whole and len(whole) == 8 * 2 + 1  # maps, masks, scores.csv: byte-identical
    for record in (tmp_path / "whole" / "per_case").iterdir():
        a, b = (json.loads(f.read_text()) for f in (record, out / "per_case" / record.name))
        assert {**a, "seconds": None} == {**b, "seconds": None}
    assert not [p for p in out.rglob(".*")]  # no temporary file left behind


def test_the_case_score_is_computed_as_its_threshold_was_calibrated(paths_env, tmp_path):
    from uadnet.inference.predictor import PredictionSettings, Predictor

    calibration = (paths_env["UADNET_RESULTS"] / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans__2d" / "fold_0"
                   / "calibration.json")
    saved = calibration.read_bytes()
    image, props = SimpleITKIO().read_images([_test_images(paths_env) / "test_000_0000.nii.gz"])
    settings = PredictionSettings(tmp_path, tmp_path / "o", 1, folds=["0"], precision="fp32", progress_bar=False)
    scores = {}
    try:
        fitted = json.loads(saved)["case_score"]  # the planned default, fitted on the healthy validation maps
        assert fitted["reduction"] == "top_fractions_over_median_vs_healthy" and fitted["top_fractions"] == [0.01, 1e-4]
        assert len(fitted["healthy_ratios"]) == 2 and min(fitted["healthy_ratios"]) >= 1.0  # top ≥ median
        predictor = Predictor(settings)
        assert predictor.case_score.healthy_ratios == tuple(fitted["healthy_ratios"])
        ramp = np.arange(1.0, 1e4 + 1.0)  # top 1 % over the median 9950.5 / 5000.5, top 0.01 % 10000 / 5000.5
        assert predictor.case_score(ramp) == pytest.approx(max(r / h for r, h in zip(
            (9950.5 / 5000.5, 10000 / 5000.5), fitted["healthy_ratios"])))
        for fraction in (0.01, 0.2):
            data = json.loads(saved)
            data["case_score"] = {"reduction": "mean_of_top_fraction", "top_fraction": fraction}
            calibration.write_text(json.dumps(data))
            predictor = Predictor(settings)
            assert predictor.case_score.top_fraction == fraction
            scores[fraction] = predictor.score_case(image, props)["score"]
        data["case_score"]["reduction"] = "median"
        calibration.write_text(json.dumps(data))
        with pytest.raises(ValueError, match="'median', which this uadnet version does not know"):
            Predictor(settings)
        data["case_score"] = {k: v for k, v in fitted.items() if k != "healthy_ratios"}
        calibration.write_text(json.dumps(data))
        with pytest.raises(ValueError, match="calibration.json: .*recalibrate"):
            Predictor(settings)
    finally:
        calibration.write_bytes(saved)
    assert scores[0.2] < scores[0.01]  # the mean of the top 20 % is lower than that of the top 1 %
