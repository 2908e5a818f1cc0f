"""Run settings: the plans' values, the command line's overrides and their sources, resolved in one place."""

from __future__ import annotations

import pytest

from tests.test_planner import CPU, brain_1mm
from uadnet.planning.planner import plan_experiment
from uadnet.run_settings import resolve_run_settings


@pytest.fixture(scope="module")
def plans():
    return plan_experiment(brain_1mm(), CPU)


def test_plans_values_unless_overridden_and_where_each_came_from(plans):
    tp = plans.configuration("2d").training
    rs = resolve_run_settings(plans, "2d", {"precision": None, "num_workers": 0, "iterations": None,
                                            "time_budget_minutes": None, "device": "cpu"})
    assert rs["precision"] == plans.compute.precision and rs.sources["precision"] == "plans"
    assert rs["num_workers"] == 0 and rs.overridden("num_workers") and tp.num_workers != 0
    assert rs["iterations"] == tp.iterations and rs["time_budget_minutes"] == tp.time_budget_minutes
    assert str(rs.device) == "cpu" and rs.to_dict()["device"] == {"value": "cpu", "from": "command line"}
    assert "num_workers 0 (command line)" in rs.describe()
    # an explicit length drops the planned time budget; --epochs counts validation intervals
    rs = resolve_run_settings(plans, "2d", {"epochs": 3, "validation_every": 7, "time_budget_minutes": None})
    assert rs["iterations"] == 21 and rs.overridden("iterations") and rs["time_budget_minutes"] is None
    rs = resolve_run_settings(plans, "2d", {"iterations": 50, "time_budget_minutes": 2.0})
    assert (rs["iterations"], rs["time_budget_minutes"]) == (50, 2.0)
    # the plans are never changed by an override
    assert plans.configuration("2d").training.iterations == tp.iterations


def test_defaults_from_elsewhere_rank_between_plans_and_flags(plans):
    calibrated = {"precision": ("bf16", "calibration"), "step_size": (0.25, "calibration")}
    rs = resolve_run_settings(plans, "2d", {"precision": None, "step_size": None}, defaults=calibrated)
    assert (rs["precision"], rs["step_size"]) == ("bf16", 0.25) and rs.sources["step_size"] == "calibration"
    rs = resolve_run_settings(plans, "2d", {"precision": "fp32", "step_size": None}, defaults=calibrated)
    assert rs["precision"] == "fp32" and rs.overridden("precision") and rs["step_size"] == 0.25


@pytest.mark.parametrize("overrides,message", [
    ({"step_size": 0.0}, r"--step_size must be in \(0, 1\]"),
    ({"iterations": 0}, "--iterations must be at least 1"),
    ({"iterations": 5, "epochs": 2}, "not both"),
    ({"num_workers": -1}, "--num_workers"),
    ({"precision": "fp16"}, "--precision"),
    ({"learning_rate": 1.0}, "unknown run setting"),
    ({"device": "tpu"}, "unknown device"),
])
def test_bad_overrides_name_the_flag(plans, overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_run_settings(plans, "2d", overrides)
