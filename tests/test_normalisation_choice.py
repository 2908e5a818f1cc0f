"""Residual normalisation is a validated choice: after training the postprocessing is chosen on normalised and on raw
maps, and the normalisation is kept unless the raw maps score clearly better on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uadnet.plans import ConfigurationPlan, InferencePlan, NetworkPlan, TrainingPlan
from uadnet.postprocessing import Postprocessing
from uadnet.training import validation
from uadnet.training.validation import RESIDUAL_NORMALISATION_TOLERANCE, ValidationCase, postprocess_and_calibrate

BRIGHT, DARK, NOISE_BRIGHT, NOISE_DARK = 0.7, 0.3, 0.08, 0.002


def _cfg(quantile: float | None = 0.99) -> ConfigurationPlan:
    network = NetworkPlan(dim=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3], [3, 3]], strides=[[1, 1], [2, 2]])
    return ConfigurationPlan("test_2d", 2, [1.0, 1.0, 1.0], [48, 48], 2, [2, 48, 48], network,
                             TrainingPlan(iterations=10, time_budget_minutes=None, estimated_seconds_per_iteration=1.0),
                             InferencePlan(residual_normalisation_quantile=quantile, intensity_novelty=False))


def _cases(where: str, change: float, n: int = 3) -> list[ValidationCase]:
    """Two tissues side by side: a bright, noisy one (left) and a dark, quiet one (right); a square of ``change`` in
    the ``where`` tissue."""
    rng = np.random.default_rng(3)
    cases = []
    for i in range(n):
        healthy = np.zeros((1, 2, 48, 48), np.float32)
        healthy[0, :, 4:44, 4:24] = BRIGHT + rng.normal(0, NOISE_BRIGHT, (2, 40, 20))
        healthy[0, :, 4:44, 24:44] = DARK + rng.normal(0, NOISE_DARK, (2, 40, 20))
        anomaly = np.zeros((2, 48, 48), bool)
        columns = slice(8, 16) if where == "bright" else slice(30, 38)
        anomaly[:, 10 + 2 * i:22 + 2 * i, columns] = True
        corrupted = np.where(anomaly[None], healthy + change, healthy).astype(np.float32)
        cases.append(ValidationCase(f"case_{i}", healthy, corrupted, anomaly, healthy[0] > 0, [1.0, 1.0, 1.0]))
    return cases


def _tissue_scorer(x: torch.Tensor) -> torch.Tensor:
    """Restores every voxel to its tissue's clean level; score = |x − restoration|."""
    restoration = torch.where(x > 0.5, BRIGHT, torch.where(x > 0.1, DARK, 0.0)).to(x.dtype)
    return torch.cat([(x - restoration).abs().mean(1, keepdim=True), restoration], dim=1)


@pytest.mark.parametrize("where, change, kept", [("dark", 0.1, True), ("bright", 0.12, False)])
def test_the_normalisation_is_kept_where_it_helps_validation_and_dropped_where_it_hurts(where, change, kept):
    # dark tissue: a change of 0.1 is below the bright tissue's noise in raw maps and far above the dark tissue's once
    # each tissue is divided by its healthy residual; bright tissue: 0.12 stands out in raw maps, but normalised it is
    # level with the quiet tissue's amplified noise
    cases = _cases(where, change)
    record, calibration = postprocess_and_calibrate(_tissue_scorer, cases, _cfg(), torch.device("cpu"))
    choice = record["residual_normalisation_choice"]
    assert choice["kept"] is kept
    assert (choice["ap_with"] >= choice["ap_without"]) is kept  # a clear difference in the direction expected
    assert (record["postprocessing"]["residual_normalisation"] is not None) is kept
    chosen_ap = choice["ap_with"] if kept else choice["ap_without"]
    assert record["validation_ap_all_voxels"]["after"] == chosen_ap
    assert (record["validation_ap_all_voxels"]["after_residual_normalisation"] is not None) is kept
    # the thresholds are calibrated on the healthy maps as the chosen postprocessing makes them
    raw, _ = postprocess_and_calibrate(_tissue_scorer, cases, _cfg(quantile=None), torch.device("cpu"))
    assert raw["residual_normalisation_choice"] is None and raw["postprocessing"]["residual_normalisation"] is None
    if not kept:
        assert record["postprocessing"] == raw["postprocessing"]
        assert record["validation_ap_all_voxels"]["after"] == raw["validation_ap_all_voxels"]["after"]
    assert calibration["voxel_thresholds"]["0.01"] > 0


@pytest.mark.parametrize("without, kept", [(0.30, True), (0.30 * (1 + RESIDUAL_NORMALISATION_TOLERANCE), True),
                                           (0.30 * (1 + RESIDUAL_NORMALISATION_TOLERANCE) + 1e-6, False),
                                           (0.10, True)])
def test_the_normalisation_stays_unless_raw_maps_win_by_more_than_the_tolerance(monkeypatch, without, kept):
    def fake(healthy, anomalous, cases, cfg, normalisation, fpr):
        ap = 0.30 if normalisation is not None else without
        return (Postprocessing(foreground_mask=True, residual_normalisation=normalisation),
                [{"step": "none", "ap": ap, "kept": True}], ap, [np.ones_like(c.foreground, np.float32) for c in cases],
                {1: ap})

    monkeypatch.setattr(validation, "_decide", fake)
    record, _ = postprocess_and_calibrate(_tissue_scorer, _cases("dark", 0.1), _cfg(), torch.device("cpu"))
    assert record["residual_normalisation_choice"]["kept"] is kept
    assert record["validation_ap_all_voxels"]["after"] == (0.30 if kept else without)
