"""One grid rule for every check: channel files of a case (reader), dataset integrity, map vs label (evaluation)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic import write_sitk
from uadnet.evaluation.evaluator import EvaluationError, evaluate_folder
from uadnet.imageio import ImageReadError
from uadnet.imageio.geometry import GRID_TOLERANCE, grid_mismatch
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO

ORIGIN = (100.0, -50.0, 20.0)  # x, y, z mm


def _props(spacing=(2.0, 1.0, 1.0), origin=ORIGIN, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    return {"spacing": list(spacing), "sitk": {"size": [8, 8, 4], "spacing": list(spacing[::-1]),
                                               "origin": list(origin), "direction": list(direction)}}


@pytest.mark.parametrize("base,change,same", [
    ({}, {"spacing": (2.0 * (1 + 0.5 * GRID_TOLERANCE), 1.0, 1.0)}, True),
    ({}, {"spacing": (2.0 * (1 + 3 * GRID_TOLERANCE), 1.0, 1.0)}, False),
    ({}, {"origin": (100.0 + 0.5 * GRID_TOLERANCE * 100.0, -50.0, 20.0)}, True),  # relative to |origin|
    ({}, {"origin": (100.0 + 3 * GRID_TOLERANCE * 100.0, -50.0, 20.0)}, False),
    ({"origin": (0.0, 0.0, 0.0)}, {"origin": (0.0, 0.0, 0.5 * GRID_TOLERANCE * 2.0)}, True),  # near 0: largest spacing
    ({"origin": (0.0, 0.0, 0.0)}, {"origin": (0.0, 0.0, 3 * GRID_TOLERANCE * 2.0)}, False),
    ({}, {"direction": (1, 0, 0, 0, 1, 0, 0, 0, -1)}, False),
])
def test_grid_rule(base, change, same):
    assert (grid_mismatch((4, 8, 8), _props(**base), (4, 8, 8), _props(**{**base, **change})) is None) == same
    assert grid_mismatch((4, 8, 8), _props(), (4, 8, 9), _props()) is not None


@pytest.mark.parametrize("shift_mm,same", [(0.5 * GRID_TOLERANCE * 100.0, True), (0.5, False)])
def test_reader_and_evaluator_apply_the_same_rule(tmp_path, shift_mm, same):
    arr = np.zeros((4, 8, 8), np.float32)
    arr[1, 2:4, 2:4] = 1
    write_sitk(arr, tmp_path / "c_0000.nii.gz", (2.0, 1.0, 1.0), origin=ORIGIN)
    moved = (ORIGIN[0] + shift_mm, *ORIGIN[1:])
    write_sitk(arr, tmp_path / "c_0001.nii.gz", (2.0, 1.0, 1.0), origin=moved)
    reader = SimpleITKIO()
    if same:
        assert reader.read_images([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])[0].shape == (2, 4, 8, 8)
    else:
        with pytest.raises(ImageReadError, match="origin"):
            reader.read_images([tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"])
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    write_sitk(arr, pred / "c.nii.gz", (2.0, 1.0, 1.0), origin=ORIGIN)
    write_sitk(arr.astype(np.uint8), gt / "c.nii.gz", (2.0, 1.0, 1.0), origin=moved)
    if same:
        evaluate_folder(pred, gt, num_bootstrap=0, disable_progress_bar=True, verbose=False)
    else:
        with pytest.raises(EvaluationError, match="origin"):
            evaluate_folder(pred, gt, num_bootstrap=0, disable_progress_bar=True, verbose=False)
