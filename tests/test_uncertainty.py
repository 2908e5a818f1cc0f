"""``uadnet_predict --save_uncertainty``: the map's geometry and values, its summary in the record, zero for identical
members, refusal with fewer than two members, and ``--continue_prediction`` redoing a case whose map is missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from uadnet.cli.predict import main as predict_main
from uadnet.evaluation.evaluator import list_cases
from uadnet.inference import UadnetPredictor
from uadnet.inference.export import output_name_collisions
from uadnet.inference.predictor import PredictionError
from uadnet.inference.uncertainty import MemberSpread
from uadnet.methods.cold_ensemble import ColdEnsemble, ColdEnsembleScorer
from uadnet.scoring.scorers import score_volume, score_volume_members

QUIET = ["--disable_progress_bar", "--precision", "fp32", "--device", "cpu"]
CASES = ("test_000", "test_001")


def _predict(model: dict, out, *extra: str) -> int:
    return predict_main(["-i", str(model["test_images"]), "-o", str(out), "--model_folder",
                         str(model["model_folder"]), *QUIET, *extra])


@pytest.fixture
def one_severity(monkeypatch):
    """cold_ensemble scored with a single severity: one member per fold."""
    monkeypatch.setattr(ColdEnsemble, "scorer", lambda self, model, precision: ColdEnsembleScorer(model, [0.5],
                                                                                                  precision))


def _restorer(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """A stand-in restorer whose output depends on the severity."""
    return x * (1 - 0.5 * alpha.reshape(-1, *[1] * (x.ndim - 1))) + 0.1 * alpha.reshape(-1, *[1] * (x.ndim - 1))


def test_member_scores_blend_like_the_score_and_average_to_it():
    scorer = ColdEnsembleScorer(_restorer, [0.2, 0.5, 0.9])
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    full = scorer.members(x)
    assert full.shape == (3, 1 + 2 + 3, 8, 8)
    assert torch.equal(full[:, :3], scorer(x))  # the default path's channels, bit for bit
    torch.testing.assert_close(full[:, 3:].mean(1), full[:, 0])
    volume = np.random.default_rng(1).random((2, 5, 20, 20)).astype(np.float32)
    score, restoration = score_volume(scorer, volume, (8, 8))
    s, r, members = score_volume_members(scorer, volume, (8, 8))
    np.testing.assert_array_equal(s, score)
    np.testing.assert_array_equal(r, restoration)
    assert members.shape == (3, 5, 20, 20)
    np.testing.assert_allclose(members.mean(0), score, atol=1e-6)


def test_member_spread_is_the_population_std_and_zero_for_identical_members():
    rng = np.random.default_rng(2)
    maps = rng.random((5, 4, 6, 7)).astype(np.float32) * 3
    spread = MemberSpread(maps.shape[1:])
    for m in maps:
        spread.add(m)
    np.testing.assert_allclose(spread.std(), maps.std(0), rtol=1e-5, atol=1e-6)
    same = MemberSpread(maps.shape[1:])
    for _ in range(3):
        same.add(maps[0])
    assert not same.std().any()


def test_the_map_has_the_input_geometry_is_finite_and_summarised_and_leaves_the_map_unchanged(
        tiny_trained_model, tmp_path):
    out, plain = tmp_path / "unc", tmp_path / "plain"
    assert _predict(tiny_trained_model, out, "--save_uncertainty") == 0
    assert _predict(tiny_trained_model, plain) == 0
    info = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
    assert "standard deviation" in info["uncertainty"]["definition"]
    assert info["uncertainty"]["members"] == "4 severities x 1 fold(s) (0)"
    for case in CASES:
        image = sitk.ReadImage(str(tiny_trained_model["test_images"] / f"{case}_0000.nii.gz"))
        unc = sitk.ReadImage(str(out / f"{case}_uncertainty.nii.gz"))
        assert unc.GetSize() == image.GetSize()
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(unc, get)(), getattr(image, get)(), atol=1e-6)
        values = sitk.GetArrayFromImage(unc)
        assert values.dtype == np.float32 and np.isfinite(values).all() and values.min() >= 0 and values.max() > 0
        for suffix in ("", "_mask"):  # asking for the uncertainty changes neither the map nor the mask
            np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}{suffix}.nii.gz"))),
                                          sitk.GetArrayFromImage(sitk.ReadImage(str(plain / f"{case}{suffix}.nii.gz"))))
        summary = json.loads((out / "per_case" / f"{case}.json").read_text(encoding="utf-8"))["uncertainty"]
        assert summary["members"] == 4
        fg = summary["foreground"]
        assert fg["voxels"] > 0 and 0 <= fg["mean"] <= fg["p95"] <= values.max() + 1e-6
        assert set(summary["mask"]) == {"voxels", "mean", "p95"}
        assert "uncertainty" not in json.loads((plain / "per_case" / f"{case}.json").read_text(encoding="utf-8"))
    assert (out / "scores.csv").read_bytes() == (plain / "scores.csv").read_bytes()
    assert sorted(list_cases(out, skip_derived=True)) == list(CASES)  # the evaluator does not read it as a map
    assert output_name_collisions(["a", "a_uncertainty"]) == ["a ↔ a_uncertainty (both would write a_uncertainty…)"]


def test_identical_members_give_zero_and_one_member_is_refused(tiny_trained_model, one_severity, tmp_path, capsys):
    image_file = tiny_trained_model["test_images"] / "test_000_0000.nii.gz"
    with UadnetPredictor.from_model_folder(tiny_trained_model["model_folder"], folds=[0, 0], device="cpu",
                                           precision="fp32") as predictor:  # the same fold twice: identical members
        image, props = predictor.reader.read_images([image_file])
        result = predictor.predict_array(image, props, with_uncertainty=True)
        assert result.uncertainty is not None and result.uncertainty.shape == result.map.shape
        assert not result.uncertainty.any()
        assert result.uncertainty_summary["members"] == 2 and result.uncertainty_summary["foreground"]["p95"] == 0
        assert predictor.predict_array(image, props).uncertainty is None
    with (UadnetPredictor.from_model_folder(tiny_trained_model["model_folder"], device="cpu") as predictor,
          pytest.raises(PredictionError, match="at least two ensemble members")):
        predictor.predict_array(image, props, with_uncertainty=True)
    out = tmp_path / "refused"
    assert _predict(tiny_trained_model, out, "--save_uncertainty") != 0
    assert "at least two ensemble members" in capsys.readouterr().err
    assert not out.exists()


def test_continue_prediction_redoes_a_case_whose_uncertainty_is_missing(tiny_trained_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(tiny_trained_model, out) == 0  # without uncertainty: both cases must be redone when asked
    assert _predict(tiny_trained_model, out, "--save_uncertainty", "--continue_prediction") == 0
    assert "already predicted" not in capsys.readouterr().out
    assert all((out / f"{c}_uncertainty.nii.gz").is_file() for c in CASES)
    (out / "test_001_uncertainty.nii.gz").unlink()
    assert _predict(tiny_trained_model, out, "--save_uncertainty", "--continue_prediction") == 0
    assert "1 case(s) already predicted, 1 to go" in capsys.readouterr().out
    assert (out / "test_001_uncertainty.nii.gz").is_file()
    assert _predict(tiny_trained_model, out, "--continue_prediction") == 0  # not asked: both are finished
    assert "2 case(s) already predicted, 0 to go" in capsys.readouterr().out
