"""uadnet_find_best_configuration on two tiny trained methods (cold_ensemble and autoencoder, 2d, fold 0): the
instructions list both and their pair with AP and FPR in [0, 1], and their commands run (uadnet_predict, and for
the pair uadnet_ensemble); a missing fold or calibration is named with the uadnet_train command that makes it; the
held-out family leaves out every "many tasks" task a candidate trains on."""

from __future__ import annotations

import json
import math
import shlex
import shutil
from dataclasses import replace

import pytest

from tests.synthetic import make_dataset, uadnet_folders
from uadnet.cli.ensemble import main as ensemble_main
from uadnet.cli.find_best_configuration import main as find_best_main
from uadnet.cli.predict import main as predict_main
from uadnet.evaluation.find_best import INPUT, JSON_FILE, OUTPUT, TEXT_FILE, Candidate, FindBestError, held_out_family
from uadnet.plans import Plans

DATASET = "Dataset001_3d_iso"
MODELS = ("autoencoder__uadnet_plans__2d", "cold_ensemble__uadnet_plans__2d")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Dataset001_3d_iso (4 training cases, 2 test cases) planned for 2d; fold 0 of cold_ensemble and of autoencoder
    trained for 3 iterations."""
    from uadnet.cli.plan_and_preprocess import main as plan_main
    from uadnet.cli.train import main as train_main

    with uadnet_folders(tmp_path_factory, "find_best") as folders:
        make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=4, n_test=2, seed=1)
        assert plan_main(["-d", "1", "-c", "2d", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
        for method in ("cold_ensemble", "autoencoder"):
            assert train_main(["1", "0", "-m", method, "--iterations", "3", "--validation_every", "3", "-np", "0",
                               "--disable_progress_bar", "--precision", "fp32"]) == 0
    return folders


def _run(line: str, inp, out) -> int:
    """Run one written command line with the placeholders filled in."""
    argv = shlex.split(line.replace(INPUT, str(inp)).replace(OUTPUT, str(out)))
    return {"uadnet_predict": predict_main, "uadnet_ensemble": ensemble_main}[argv[0]](
        argv[1:] + ["--disable_progress_bar"])


def test_instructions_rank_every_candidate_and_their_commands_run(paths_env, tmp_path):
    assert find_best_main(["-d", "1", "--disable_progress_bar"]) == 0
    root = paths_env["UADNET_RESULTS"] / DATASET
    result = json.loads((root / JSON_FILE).read_text(encoding="utf-8"))
    names = sorted(r["name"] for r in result["ranking"])
    assert names == sorted([*MODELS, " + ".join(MODELS)])
    for r in result["ranking"]:
        assert r["ap"] is not None and math.isfinite(r["ap"]) and 0.0 <= r["ap"] <= 1.0, r
        assert 0.0 <= r["fpr"] <= 1.0 and r["num_cases"] >= 1, r
    assert result["chosen"] == result["ranking"][0] and result["folds"] == ["0"] and not result["skipped"]
    assert "tasks fractal_intensity (" in result["held_out_family"]  # foreign_patch: DAG's texture step
    assert "not held out: foreign_patch (cold_ensemble)" in result["held_out_family"]
    text = (root / TEXT_FILE).read_text(encoding="utf-8")
    assert "chosen: " + result["chosen"]["name"] in text and " + ".join(MODELS) in text

    test_images = paths_env["UADNET_RAW"] / DATASET / "imagesTs"
    chosen = result["chosen"]  # its first predict command, as given, with -i/-o added
    out = tmp_path / "chosen"
    assert predict_main(shlex.split(chosen["predict"][0])[1:] + ["-i", str(test_images), "-o", str(out),
                                                                "--disable_progress_bar"]) == 0
    assert len(list((out / "per_case").glob("*.json"))) == 2
    pair = next(r for r in result["ranking"] if len(r["members"]) == 2)  # member predictions, then uadnet_ensemble
    assert len(pair["commands"]) == 3 and pair["commands"][-1].startswith("uadnet_ensemble ")
    for line in pair["commands"]:
        assert _run(line, test_images, tmp_path / "pair") == 0
    info = json.loads((tmp_path / "pair" / "prediction.json").read_text(encoding="utf-8"))
    assert info["method"] == "ensemble" and len(info["members"]) == 2
    assert len(list((tmp_path / "pair" / "per_case").glob("*.json"))) == 2


def test_missing_folds_and_calibrations_are_named_with_the_command_that_makes_them(paths_env, tmp_path,
                                                                                    monkeypatch, capsys):
    assert find_best_main(["-d", "1", "-f", "0", "1", "--disable_progress_bar"]) == 1  # nothing has fold 1
    err = capsys.readouterr().err
    for method in ("cold_ensemble", "autoencoder"):
        assert f"uadnet_train {DATASET} 1 -m {method} -c 2d" in err
    results = tmp_path / "results"  # a copy whose autoencoder stopped before calibration
    shutil.copytree(paths_env["UADNET_RESULTS"], results)
    (results / DATASET / MODELS[0] / "fold_0" / "calibration.json").unlink()
    monkeypatch.setenv("UADNET_RESULTS", str(results))
    assert find_best_main(["-d", "1", "--disable_progress_bar"]) == 0
    result = json.loads((results / DATASET / JSON_FILE).read_text(encoding="utf-8"))
    assert [r["name"] for r in result["ranking"]] == [MODELS[1]]
    assert any(f"uadnet_train {DATASET} 0 -m autoencoder -c 2d --c" in why for why in result["skipped"][MODELS[0]])
    assert f"uadnet_train {DATASET} 0 -m autoencoder -c 2d --c" in (results / DATASET / TEXT_FILE).read_text()


def test_the_held_out_family_leaves_out_every_task_a_candidate_trains_on(paths_env, tmp_path):
    plans = Plans.load(paths_env["UADNET_RESULTS"] / DATASET / MODELS[1] / "uadnet_plans.json")
    ic = plans.methods.image_conditioned

    def family(method: str, train_tasks: list[str] | None = None, **validation) -> tuple:
        p = replace(plans, validation=replace(plans.validation, **validation), methods=replace(
            plans.methods, image_conditioned=replace(ic, train_tasks=train_tasks or ic.train_tasks)))
        return held_out_family([Candidate(tmp_path / f"{m}__uadnet_plans__2d", p)
                                for m in (method, "image_conditioned")])

    vp, text = family("autoencoder")  # the defaults: image_conditioned trains on neither validation task
    assert vp.tasks == ["fractal_intensity", "foreign_patch"] and "poisson_blend (image_conditioned)" in text
    vp, text = family("cold_ensemble")  # DAG's texture step is the foreign-patch interpolation
    assert vp.tasks == ["fractal_intensity"] and "foreign_patch (cold_ensemble)" in text
    assert family("cold_multistep")[0].tasks == ["fractal_intensity"]  # FPI: the same
    assert family("autoencoder", [*ic.train_tasks, "foreign_patch"])[0].tasks == ["fractal_intensity"]
    # no validation task is held out: every task no candidate trains on instead
    assert family("autoencoder", ["foreign_patch", "fractal_intensity"])[0].tasks == ["poisson_blend", "sink", "source"]
    with pytest.raises(FindBestError, match="training task"):
        family("autoencoder", ["poisson_blend", "sink", "source", "fractal_intensity", "foreign_patch"])
    vp, text = family("cold_ensemble", corruption="dag")  # the plans' family would favour cold_ensemble
    assert vp.corruption == "many_tasks_validation" and vp.tasks == ["fractal_intensity"]
    assert "trains cold_ensemble" in text
