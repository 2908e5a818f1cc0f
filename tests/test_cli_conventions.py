"""Command-line conventions (documentation/how_to_use.md, "Command-line conventions"): one meaning per short flag
across the commands, one name for the training budget, nnU-Net's spellings accepted, nnU-Net's argument order
answered with the uadnet command, ignored planning options named, unset data folders announced."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic import make_dataset

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(re.findall(r'"uadnet_(\w+)=uadnet\.cli\.\w+:main"', (ROOT / "setup.py").read_text()))

# short flag -> (meaning, the destinations it may fill); the table in documentation/how_to_use.md
SHORT_FLAGS = {
    "-d": ("dataset id(s) or name(s)", {"dataset"}),
    "-i": ("input folder(s)", {"input", "input_folder"}),
    "-o": ("output: the folder (or the one file) the command writes", {"output", "output_file", "output_root",
                                                                       "output_folder"}),
    "-c": ("configuration(s)", {"configuration", "configurations"}),
    "-m": ("method(s)", {"method", "methods"}),
    "-p": ("plans name", {"plans"}),
    "-f": ("fold(s)", {"fold", "folds"}),
    "-np": ("number of worker processes", {"num_processes", "num_workers"}),
    "-chk": ("checkpoint file of each fold", {"checkpoint"}),
    "-g": ("label (ground-truth) folder", {"label_folder"}),
    "-b": ("baseline", {"baseline"}),
    "-n": ("number of samples", {"num_samples"}),
    "-h": ("help", {"help"}),
}
# hidden older spellings that kept their old meaning in one command (they clash with nothing there)
LEGACY = {("evaluate", "-p"), ("plot_overlays", "-p"), ("plot_corruptions", "-f")}


def _parser(command: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"uadnet.cli.{command}").build_parser()


def _short(option: str) -> bool:
    return option.startswith("-") and not option.startswith("--")


def test_every_short_flag_has_one_meaning():
    wrong = []
    for command in COMMANDS:
        for action in _parser(command)._actions:
            hidden = action.help == argparse.SUPPRESS
            for option in filter(_short, action.option_strings):
                if hidden and ((command, option) in LEGACY or option not in SHORT_FLAGS):
                    continue  # a hidden alias of another meaning's flag is allowed only where listed
                if option not in SHORT_FLAGS or action.dest not in SHORT_FLAGS[option][1]:
                    wrong.append(f"uadnet_{command} {option} -> {action.dest}")
    assert not wrong, "short flags with another meaning than the conventions table:\n" + "\n".join(wrong)


def test_conventions_table_is_in_the_docs():
    text = (ROOT / "documentation" / "how_to_use.md").read_text(encoding="utf-8")
    section = text[text.index("## Command-line conventions"):]
    section = section[:section.find("\n## ", 5)]
    missing = [f for f in SHORT_FLAGS if f != "-h" and f"`{f}`" not in section]
    assert not missing, f"the conventions table does not list {missing}"


def test_the_training_budget_has_one_name():
    for command in ("train", "demo", "plan_and_preprocess"):
        visible = {o for a in _parser(command)._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        assert "--time_budget" in visible and not {o for o in visible if "budget" in o} - {"--time_budget"}
    assert _parser("demo").parse_args(["--budget", "3"]).time_budget == 3.0
    assert _parser("plan_and_preprocess").parse_args(["-d", "1", "--time_budget_minutes", "5"]).time_budget == 5.0


@pytest.mark.parametrize("command, argv, expected", [
    ("train", ["1", "0", "-device", "cpu", "--num_processes", "3"], {"device": "cpu", "num_workers": 3}),
    ("predict", ["-i", "a", "-o", "b", "-d", "1", "-device", "cuda", "-step_size", "0.25", "-num_parts", "2",
                 "-part_id", "1", "-chk", "checkpoint_best.pth"],
     {"device": "cuda", "step_size": 0.25, "num_parts": 2, "part_id": 1, "checkpoint": "checkpoint_best.pth"}),
    ("plan_and_preprocess", ["-d", "1", "-gpu_memory_target", "6", "-device", "cpu", "--no_pp"],
     {"memory_target_gb": 6.0, "device": "cpu", "no_preprocessing": True}),
    ("demo", ["-device", "cpu"], {"device": "cpu"}),
    ("ensemble", ["-i", "a", "b", "-o", "c", "-device", "cpu"], {"device": "cpu"}),
    ("find_best_configuration", ["-d", "1", "-device", "cpu"], {"device": "cpu"}),
    ("evaluate", ["-p", "pred", "-g", "labels"], {"pred_folder": Path("pred")}),
    ("plot_overlays", ["-i", "a", "-p", "pred", "-o", "png"], {"pred_folder": Path("pred")}),
    ("plot_corruptions", ["-d", "1", "-f", "fpi"], {"families": ["fpi"]}),
])
def test_nnunet_and_older_spellings_fill_the_same_option(command, argv, expected):
    args = vars(_parser(command).parse_args(argv))
    assert {k: args[k] for k in expected} == expected


def test_nnunet_options_without_a_counterpart_are_named_not_refused(capsys):
    from uadnet.cli.common import nnunet_hints

    args = _parser("predict").parse_args(["-i", "a", "-o", "b", "-d", "1", "-npp", "3", "-nps", "3"])
    nnunet_hints("uadnet_predict", args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("(nnU-Net) is ignored" in line and "--num_parts" in line for line in err)


@pytest.mark.parametrize("argv, command", [
    (["1", "2d", "0"], "uadnet_train 1 0 -c 2d"),
    (["-m", "ae", "Dataset001_X", "3d_fullres", "all", "--c"], "uadnet_train Dataset001_X all -c 3d -m ae --c"),
])
def test_nnunet_argument_order_is_answered_with_the_uadnet_command(argv, command, capsys):
    from uadnet.cli.train import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uadnet_train: error:") and err[0].endswith(command)


def test_planning_options_ignored_because_plans_exist_are_named(uadnet_env, capsys):
    from uadnet.cli.plan_and_preprocess import main

    raw = uadnet_env[0]
    make_dataset(raw, dataset_id=1, kind="2d_png", n_cases=4)
    quiet = ["--no_preprocessing", "--disable_progress_bar"]
    assert main(["-d", "1", "--device", "cpu", *quiet]) == 0
    capsys.readouterr()
    assert main(["-d", "1", "--codebook_size", "3", "--memory_target_gb", "2", "--time_budget", "5", *quiet]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    for flag in ("--codebook_size", "--memory_target_gb", "--time_budget", "--overwrite_plans"):
        assert flag in warnings[0]
    assert main(["-d", "1", *quiet]) == 0
    assert "warning" not in capsys.readouterr().err


def test_unset_data_folders_are_named_before_anything_is_written(tmp_path):
    """All UADNET_* unset, HOME a fresh folder: the command says where the data goes, then writes there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UADNET_")}
    env.update(HOME=str(tmp_path), OMP_NUM_THREADS="1")
    make_dataset(tmp_path / "uadnet_data" / "raw", dataset_id=1, kind="2d_png", n_cases=4)
    run = subprocess.run([sys.executable, "-m", "uadnet.cli.plan_and_preprocess", "-d", "1", "--no_preprocessing",
                          "--device", "cpu", "--disable_progress_bar"], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    for kind in ("raw", "preprocessed"):
        assert f"UADNET_{kind.upper()} is not set; using {tmp_path / 'uadnet_data' / kind}" in run.stderr
    assert (tmp_path / "uadnet_data" / "preprocessed" / "Dataset001_2d_png" / "uadnet_plans.json").is_file()


def test_each_checkpoint_has_its_own_calibration_file(tmp_path):
    import torch

    from uadnet.training.validation import networks_to_calibrate
    from uadnet.utilities import checkpoints as ckpt

    assert ckpt.per_checkpoint_file("calibration.json", ckpt.FINAL) == "calibration.json"
    assert ckpt.per_checkpoint_file("postprocessing.json", ckpt.BEST) == "postprocessing_best.json"
    net = torch.nn.Linear(2, 2)
    assert [c for c, _ in networks_to_calibrate(tmp_path, net, 10)] == [ckpt.FINAL]  # no best: final only
    other = torch.nn.Linear(2, 2)
    ckpt.save_checkpoint({"network": other.state_dict(), "iteration": 4, "meta": {}}, tmp_path / ckpt.BEST)
    (_, final), (name, best) = networks_to_calibrate(tmp_path, net, 10)
    assert final is net and name == ckpt.BEST and torch.equal(best.weight, other.weight)
    assert networks_to_calibrate(tmp_path, net, 4)[1][1] is None  # best = final: its calibration is copied


def test_chk_checkpoint_best_is_usable_and_an_older_fold_names_the_refit(tiny_trained_model, tmp_path, capsys):
    import json
    import shutil

    from uadnet.cli.predict import main

    fold = tiny_trained_model["model_folder"] / "fold_0"
    assert json.loads((fold / "calibration_best.json").read_text())["checkpoint"] == "checkpoint_best.pth"
    inp = tiny_trained_model["test_images"]
    common = ["-i", str(inp), "-chk", "checkpoint_best.pth", "-device", "cpu", "--disable_progress_bar"]
    assert main([*common, "-o", str(tmp_path / "out"), "--model_folder",
                 str(tiny_trained_model["model_folder"])]) == 0
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["checkpoint"] == "checkpoint_best.pth"

    older = tmp_path / "cold_ensemble__uadnet_plans__2d"  # a fold trained before checkpoint_best was calibrated
    shutil.copytree(tiny_trained_model["model_folder"], older)
    for name in ("calibration_best.json", "postprocessing_best.json"):
        (older / "fold_0" / name).unlink()
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "out2"), "--model_folder", str(older)]) == 1
    err = capsys.readouterr().err.strip()
    assert "calibration_best.json is missing" in err and "uadnet_train DATASET 0 --c --iterations 3" in err
