"""The sliding-window step chosen on validation after training: the coarse step is tried only where it places other
tiles, kept unless it loses validation AP, recorded, and refused when the plans give an impossible value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uadnet.plans import ConfigurationPlan, InferencePlan, NetworkPlan, PlansError, TrainingPlan, section_from_dict
from uadnet.postprocessing.postprocessing import MIN_GAIN
from uadnet.training import validation
from uadnet.training.validation import ValidationCase, choose_step_and_calibrate


def _cfg(patch: list[int], coarse: float | None = 1.0) -> ConfigurationPlan:
    network = NetworkPlan(dim=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3], [3, 3]], strides=[[1, 1], [2, 2]])
    return ConfigurationPlan("test_2d", 2, [1.0, 1.0, 1.0], patch, 2, [1, 64, 64], network,
                             TrainingPlan(iterations=10, time_budget_minutes=None, estimated_seconds_per_iteration=1.0),
                             InferencePlan(step_size=0.5, coarse_step_size=coarse))


def _cases(n: int = 3, size: int = 64) -> list[ValidationCase]:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        healthy = np.zeros((1, 2, size, size), np.float32)
        healthy[:, :, 8:-8, 8:-8] = 0.5 + rng.normal(0, 0.1, (1, 2, size - 16, size - 16))
        anomaly = np.zeros((2, size, size), bool)
        anomaly[:, 20 + i:30 + i, 25:37] = True  # weak against the noise: no postprocessing makes the AP 1 at both steps
        corrupted = np.where(anomaly[None], healthy + 0.15, healthy).astype(np.float32)
        cases.append(ValidationCase(f"case_{i}", healthy, corrupted, anomaly, healthy[0] > 0, [1.0, 1.0, 1.0]))
    return cases


def _tile_mean_scorer(x: torch.Tensor) -> torch.Tensor:
    """|x − the tile's mean| and the tile's mean as restoration: a score that depends on where the tiles lie."""
    mean = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    return torch.cat([(x - mean).abs().mean(1, keepdim=True), mean], dim=1)


def test_the_coarse_step_is_tried_where_it_moves_tiles_and_the_choice_follows_validation_ap():
    cases = _cases()  # 64 voxels with 24-voxel tiles: step 0.5 places 5 tiles per axis, step 1.0 places 3
    record, calibration, step = choose_step_and_calibrate(_tile_mean_scorer, cases, _cfg([24, 24]), torch.device("cpu"))
    trials = record["step_size_trials"]
    assert set(trials) == {"0.5", "1.0"} and all(0 < v <= 1 for v in trials.values()) and trials["0.5"] != trials["1.0"]
    assert step == (1.0 if trials["1.0"] >= trials["0.5"] - MIN_GAIN else 0.5)
    assert record["validation_ap_all_voxels"]["after"] == trials[str(step)]  # the record of the chosen step
    assert calibration["voxel_thresholds"] and calibration["cases"] == [c.key for c in cases]


def test_the_coarse_step_is_not_tried_where_it_places_the_same_tiles():
    cases = _cases(size=40)  # 40 voxels, 32-voxel tiles: two tiles per axis (0 and 8) at either step
    record, _, step = choose_step_and_calibrate(_tile_mean_scorer, cases, _cfg([32, 32]), torch.device("cpu"))
    assert step == 0.5 and list(record["step_size_trials"]) == ["0.5"]
    record, _, step = choose_step_and_calibrate(_tile_mean_scorer, cases, _cfg([24, 24], coarse=None),
                                                torch.device("cpu"))
    assert step == 0.5 and list(record["step_size_trials"]) == ["0.5"]  # null: never tried


@pytest.mark.parametrize("fine_ap, coarse_ap, expected", [(0.30, 0.30, 1.0), (0.30, 0.30 - MIN_GAIN / 2, 1.0),
                                                          (0.30, 0.29, 0.5), (0.30, 0.35, 1.0)])
def test_the_coarse_step_is_kept_unless_it_loses_more_than_the_minimum_gain(monkeypatch, fine_ap, coarse_ap, expected):
    def fake(scorer, cases, cfg, device):
        ap = coarse_ap if cfg.inference.step_size == 1.0 else fine_ap
        return {"validation_ap_all_voxels": {"after": ap}}, {"step": cfg.inference.step_size}

    monkeypatch.setattr(validation, "postprocess_and_calibrate", fake)
    record, calibration, step = choose_step_and_calibrate(_tile_mean_scorer, _cases(), _cfg([24, 24]),
                                                          torch.device("cpu"))
    assert step == expected and calibration["step"] == expected
    assert record["step_size_trials"] == {"0.5": fine_ap, "1.0": coarse_ap}


def test_impossible_steps_are_refused_when_the_plans_are_read():
    with pytest.raises(PlansError, match="coarse_step_size.*0.25"):
        InferencePlan(step_size=0.5, coarse_step_size=0.25)
    with pytest.raises(PlansError, match="step_size"):
        InferencePlan(step_size=0.0)
    with pytest.raises(PlansError, match="coarse_step_size.*1.5"):  # as a hand-edited uadnet_plans.json is read
        section_from_dict(InferencePlan, {"step_size": 0.5, "coarse_step_size": 1.5}, "configurations.2d.inference")
    assert section_from_dict(InferencePlan, {"coarse_step_size": None}, "inference").coarse_step_size is None
