"""Test-time mirroring: exact means over the mirrorings, members kept, the plans' axes checked, calibration and
prediction scoring alike (and a warning when they do not)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_planner import CPU, brain_1mm
from tests.test_scoring import Affine
from uadnet.methods.base import num_members
from uadnet.methods.cold_ensemble import ColdEnsembleScorer
from uadnet.planning.planner import plan_experiment
from uadnet.plans import Plans, PlansError
from uadnet.scoring.mirroring import check_mirror_axes
from uadnet.scoring.scorers import MirroredScorer, mirrored, score_volume


class Weighted:
    """A scorer that is not mirror-equivariant: score = x₀ · w (w fixed per patch position), restoration = x."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.w, self.calls = torch.arange(float(np.prod(shape))).reshape(shape), 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.cat([x[:, :1] * self.w, x], 1)


def test_the_mirrored_score_is_the_mean_over_every_mirroring_and_the_restoration_is_untouched():
    x = torch.rand(2, 1, 4, 5)
    scorer = Weighted((4, 5))
    out = MirroredScorer(scorer, (0, 1))(x)
    w = scorer.w
    assert scorer.calls == 4
    torch.testing.assert_close(out[:, :1], x * (w + w.flip(0) + w.flip(1) + w.flip(0, 1)) / 4)
    torch.testing.assert_close(out[:, 1:], x)
    one = Weighted((4, 5))
    torch.testing.assert_close(MirroredScorer(one, (1,))(x)[:, :1], x * (w + w.flip(1)) / 2)
    assert one.calls == 2
    three = Weighted((3, 4, 5))
    MirroredScorer(three, (0, 1, 2))(torch.rand(1, 1, 3, 4, 5))
    assert three.calls == 8
    assert mirrored(scorer, ()) is scorer


def test_a_member_scorer_stays_one_and_an_equivariant_scorer_is_unchanged():
    x = torch.rand(3, 2, 6, 4)
    plain = ColdEnsembleScorer(Affine(1.0, 0.5), [0.2, 0.4], "fp32")
    mirror = mirrored(plain, (0, 1))
    assert num_members(mirror) == 2
    torch.testing.assert_close(mirror(x), plain(x))  # a voxel-wise restorer: mirroring changes nothing
    torch.testing.assert_close(mirror.members(x), plain.members(x))
    torch.testing.assert_close(mirror.members(x)[:, :3], mirror(x))
    assert num_members(mirrored(Weighted((6, 4)), (0,))) == 1


def test_score_volume_mirrors_each_tile():
    vol = np.random.default_rng(0).random((1, 3, 8, 10)).astype(np.float32)
    scorer = Weighted((8, 10))
    w = scorer.w.numpy()
    score, restoration = score_volume(scorer, vol, (8, 10), step_size=1.0, mirror_axes=[1])
    np.testing.assert_allclose(score, vol[0] * (w + w[:, ::-1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(restoration, vol, rtol=1e-6)


@pytest.mark.parametrize("axes,dim", [([0, 0], 2), ([2], 2), ([True], 2), ([-1], 3)])
def test_impossible_mirror_axes_are_refused(axes, dim):
    with pytest.raises(ValueError, match="mirror axes"):
        check_mirror_axes(axes, dim)


def test_the_planner_mirrors_every_patch_axis_and_the_plans_check_the_axes():
    plans = plan_experiment(brain_1mm(), CPU)
    for cfg in plans.configurations.values():
        assert cfg.inference.mirror_axes == list(range(cfg.dim))
    d = plans.to_dict()
    assert Plans.from_dict(json.loads(json.dumps(d))).configuration("2d").inference.mirror_axes == [0, 1]
    d["configurations"]["2d"]["inference"]["mirror_axes"] = [0, 2]
    with pytest.raises(PlansError, match="mirror_axes"):
        Plans.from_dict(d)
    d["configurations"]["2d"]["inference"]["mirror_axes"] = [1, 1]
    with pytest.raises(PlansError, match="mirror_axes"):
        Plans.from_dict(d)
    del d["configurations"]["2d"]["inference"]["mirror_axes"]  # plans written before it: no mirroring
    assert Plans.from_dict(d).configuration("2d").inference.mirror_axes == []


def test_prediction_mirrors_as_calibrated_and_warns_when_told_otherwise(tiny_trained_model, capsys):
    from uadnet.inference.api import UadnetPredictor

    folder = tiny_trained_model["model_folder"]
    calibration = json.loads((folder / "fold_0" / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["mirror_axes"] == [0, 1]
    image = np.random.default_rng(1).random((1, 6, 16, 16)).astype(np.float32) * 100
    props = {"spacing": [1.0, 1.0, 1.0]}
    with UadnetPredictor.from_model_folder(folder) as p:
        assert p.predictor.mirror_axes == [0, 1] and "mirror_axes [0, 1] (calibration)" in p.describe()
        mirrored_map = p.predict_array(image, props).map
    assert "WARNING" not in capsys.readouterr().out
    with UadnetPredictor.from_model_folder(folder, mirror_axes=[]) as p:
        plain_map = p.predict_array(image, props).map
    assert "calibrated with mirror_axes [0, 1], this prediction uses []" in capsys.readouterr().out
    assert plain_map.shape == mirrored_map.shape and not np.allclose(plain_map, mirrored_map)
    with pytest.raises(RuntimeError, match="mirror axes"):  # PredictionError
        UadnetPredictor.from_model_folder(folder, mirror_axes=[2])
