"""The trainer: learning, exact resume, broken checkpoints, DDP, 3D, overwrite protection, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import uadnet
from tests.synthetic import make_dataset, uadnet_folders
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.train import main as train_main
from uadnet.training.schedule import learning_rate
from uadnet.training.trainer import Trainer, TrainerSettings
from uadnet.utilities import checkpoints as ckpt

FAST = ["--precision", "fp32", "-np", "0", "--disable_progress_bar"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny 3D dataset (6 cases) planned and preprocessed for 2d and 3d; yields the three folders."""
    with uadnet_folders(tmp_path_factory, "train") as folders:
        make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=6)
        assert plan_main(["-d", "1", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
        yield folders


def _fold(results: Path, method: str = "cold_ensemble", cfg: str = "2d", fold: str = "0") -> Path:
    return results / "Dataset001_3d_iso" / f"{method}__uadnet_plans__{cfg}" / f"fold_{fold}"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        torch.testing.assert_close(value, b[k], atol=atol, rtol=0, msg=k)


def test_learning_rate_schedule():
    assert learning_rate(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert learning_rate(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(50, 100, 1.0, 10, "constant") == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(50, 100, 1.0, 10, "step")


def test_training_reduces_the_loss_and_writes_every_artefact(results):
    assert train_main(["1", "0", "--iterations", "60", "--validation_every", "30", *FAST]) == 0
    fold = _fold(results)
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth", "progress.png",
                 "training_log.txt", "calibration.json"):
        assert (fold / name).is_file(), name
    for name in ("uadnet_plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (fold.parent / name).is_file(), name
    history = _load(fold / "checkpoint_latest.pth")["history"]
    loss = np.asarray(history["loss"])
    assert len(loss) == 60 and loss[-10:].mean() < 0.85 * loss[:10].mean()
    assert history["val_iteration"] == [30, 60] and all(0 < a <= 1 for a in history["val_ap"])
    final = _load(fold / "checkpoint_final.pth")
    assert final["iteration"] == 60 and final["meta"]["method"] == "cold_ensemble"
    calib = json.loads((fold / "calibration.json").read_text(encoding="utf-8"))
    t = calib["voxel_thresholds"]
    assert t["0.05"] <= t["0.01"] <= t["0.001"] and calib["num_cases"] >= 1
    # the installed uadnet is recorded beside the plans' own version
    assert calib["uadnet_version"] == final["meta"]["uadnet_version"] == uadnet.__version__
    assert final["meta"]["plans_uadnet_version"] == json.loads((fold.parent / "uadnet_plans.json").read_text(
        encoding="utf-8"))["uadnet_version"]


def _interrupt_at(monkeypatch, iteration: int, exc: type[BaseException] | None) -> None:
    """``exc``: raised before step ``iteration`` changes anything (a crash); None: Ctrl-C pressed during it."""
    original = Trainer._step

    def step(self, batch, it):
        if it == iteration:
            if exc is not None:
                raise exc("simulated interruption")
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled by the trainer's SIGINT handler
        return original(self, batch, it)

    monkeypatch.setattr(Trainer, "_step", step)


ARGS = ["1", "0", "--iterations", "9", "--checkpoint_every", "3", "--validation_every", "3", "--seed", "3", *FAST]


@pytest.mark.parametrize("how", ["ctrl_c", "kill", "kill_then_truncated"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(results, monkeypatch, tmp_path, how):
    assert train_main(ARGS) == 0
    reference = {n: _load(_fold(results) / n) for n in ("checkpoint_latest.pth", "checkpoint_final.pth")}
    shutil.rmtree(results)
    with monkeypatch.context() as mp:
        # Ctrl-C during step 7 finishes it and saves iteration 8; a hard kill leaves the checkpoint of 6
        _interrupt_at(mp, 7, None if how == "ctrl_c" else SystemError)
        if how == "ctrl_c":  # one line with the command that continues, exit code 130
            assert train_main(ARGS) == 130
        else:
            with pytest.raises(SystemError):
                train_main(ARGS)
    latest = _fold(results) / "checkpoint_latest.pth"
    assert _load(latest)["iteration"] == (8 if how == "ctrl_c" else 6)
    if how == "kill_then_truncated":  # the newest file is broken: the previous one (iteration 3) is used
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    assert train_main(ARGS) == 1  # refuses to start over a run without --c
    assert train_main([*ARGS, "--c"]) == 0
    log = (_fold(results) / "training_log.txt").read_text(encoding="utf-8")
    if how == "kill_then_truncated":
        assert "checkpoint_latest.pth is not a readable checkpoint" in log and "from checkpoint_previous.pth" in log
    for name, ref in reference.items():
        got = _load(_fold(results) / name)
        assert got["iteration"] == ref["iteration"] == 9
        _assert_same_weights(got["network"], ref["network"])
    _assert_same_weights(_load(latest)["ema"]["weights"], reference["checkpoint_latest.pth"]["ema"]["weights"])
    assert _load(latest)["history"]["val_iteration"] == [3, 6, 9]


def test_nan_loss_and_ctrl_c_end_with_one_line(results, monkeypatch, capsys):
    """A NaN loss stops training with one line naming the checkpoint folder and the fix (no traceback); Ctrl-C
    with one line giving the command that continues, exit code 130."""
    from uadnet.methods.cold_diffusion import ColdDiffusion

    with monkeypatch.context() as mp:
        mp.setattr(ColdDiffusion, "loss", lambda self, model, batch: torch.tensor(float("nan"), requires_grad=True))
        mp.delenv("UADNET_DEBUG", raising=False)
        assert train_main(["1", "0", "--iterations", "4", *FAST]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("uadnet_train: error: the loss became nan at iteration 0") and "--c" in err
    shutil.rmtree(results)
    with monkeypatch.context() as mp:
        _interrupt_at(mp, 1, None)
        assert train_main(["1", "0", "--iterations", "4", *FAST]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("uadnet_train: interrupted (Ctrl-C); continue from the last checkpoint with: uadnet_train 1 0 "
                    f"--iterations 4 {' '.join(FAST)} --c")


def test_continue_after_a_finished_run_changes_nothing(results):
    assert train_main(["1", "0", "--iterations", "4", *FAST]) == 0
    before = _load(_fold(results) / "checkpoint_final.pth")["network"]
    assert train_main(["1", "0", "--iterations", "4", "--c", *FAST]) == 0
    _assert_same_weights(_load(_fold(results) / "checkpoint_final.pth")["network"], before, atol=0)


def test_3d_configuration_and_multistep_method_train(results):
    assert train_main(["1", "1", "-c", "3d", "--iterations", "3", *FAST]) == 0
    assert _load(_fold(results, cfg="3d", fold="1") / "checkpoint_final.pth")["meta"]["configuration"] == "3d"
    assert train_main(["1", "all", "-m", "cold_multistep", "--iterations", "3", "--no_calibration", *FAST]) == 0
    folder = _fold(results, "cold_multistep", fold="all")
    assert (folder / "checkpoint_final.pth").is_file() and not (folder / "calibration.json").exists()


def test_time_budget_shortens_the_run_and_its_warmup(results):
    """An exhausted budget stops the run right after the timing iterations; the warm-up sized for 1000 iterations
    (200) is cut to fit, so the shortened run is not spent warming up."""
    assert train_main(["1", "0", "--iterations", "1000", "--time_budget", "0.0001", "--no_calibration",
                       "--validation_every", "1000", *FAST]) == 0
    state = _load(_fold(results) / "checkpoint_latest.pth")
    assert state["iteration"] == state["total_iterations"] <= 25
    assert state["warmup_iterations"] <= 21
    assert "time budget" in (_fold(results) / "training_log.txt").read_text(encoding="utf-8")


def test_time_budget_lengthens_a_planned_run_by_at_most_a_quarter(results, env):
    """Plans whose estimate was too high (24 iterations for an hour) train 1.25 × 24 = 30 iterations; an explicit
    --iterations is never lengthened."""
    from uadnet.training.trainer import MAX_BUDGET_EXTENSION

    pre = env["UADNET_PREPROCESSED"] / "Dataset001_3d_iso"
    plans = json.loads((pre / "uadnet_plans.json").read_text())
    plans["plans_name"] = "uadnet_plans_short"
    plans["configurations"]["2d"]["training"].update(iterations=24, time_budget_minutes=60.0)
    (pre / "uadnet_plans_short.json").write_text(json.dumps(plans))
    short = ["1", "0", "-p", "uadnet_plans_short", "--validation_every", "1000", "--no_calibration", *FAST]
    assert train_main(short) == 0
    fold = results / "Dataset001_3d_iso" / "cold_ensemble__uadnet_plans_short__2d" / "fold_0"
    state = _load(fold / "checkpoint_latest.pth")
    assert state["iteration"] == state["total_iterations"] == int(MAX_BUDGET_EXTENSION * 24) == 30
    assert "instead of 24" in (fold / "training_log.txt").read_text(encoding="utf-8")
    explicit = ["1", "1", *short[2:], "--iterations", "24", "--time_budget", "60"]
    assert train_main(explicit) == 0
    state = _load(fold.parent / "fold_1" / "checkpoint_latest.pth")
    assert state["iteration"] == state["total_iterations"] == 24


def test_bad_requests_are_clear_errors(results, capsys):
    assert train_main(["1", "7", "--iterations", "2", *FAST]) == 1
    assert "fold must be 0..4" in capsys.readouterr().err
    assert train_main(["1", "0", "-c", "3d_fullres", "--iterations", "2", *FAST]) == 1
    assert "available" in capsys.readouterr().err
    assert train_main(["99", "0", "--iterations", "2", *FAST]) == 1


def test_settings_from_plans_and_cli():
    s = TrainerSettings(dataset=1, fold=0, iterations=5)
    assert s.method == "cold_ensemble" and s.precision is None


@pytest.mark.parametrize("method", ["cold_ensemble", "synomaly"])
def test_two_process_gloo_ddp_writes_one_set_of_checkpoints(results, method):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "uadnet.cli.train", "1", "0", "-m", method, "--iterations", "4", "--checkpoint_every", "2", *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    fold = _fold(results, method)
    state = _load(fold / "checkpoint_latest.pth")
    assert state["meta"]["world_size"] == 2 and state["meta"]["method"] == method and state["iteration"] == 4
    assert (fold / "checkpoint_final.pth").is_file()
    assert sorted(p.name for p in fold.glob("*.pth")) == sorted(
        [ckpt.BEST, ckpt.FINAL, ckpt.LATEST, ckpt.PREVIOUS])
    assert not list(fold.glob(".*"))  # no temporary files left behind


def test_the_device_comes_from_the_plans_unless_the_command_line_names_one(monkeypatch, capsys):
    from uadnet.utilities.torch_utils import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None, "cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device(None, "cuda").type in ("cpu", "mps")  # plans made on a GPU machine still run here
    assert "the plans were made for device cuda" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="--device cuda was asked for"):
        resolve_device("cuda", "cpu")  # asked for explicitly: an error, not a silent fallback
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None, "auto").type == "cuda" and resolve_device("cpu", "cuda").type == "cpu"
