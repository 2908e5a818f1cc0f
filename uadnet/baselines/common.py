"""What both training-free baselines share: expected lesion contrast per channel, the one-grid check, the
reference cases (fold 0 of ``splits_final.json``) and calibration on healthy validation cases.

Arrays are ``(c, z, y, x)`` (channels first) or ``(z, y, x)``, as the dataset's reader returns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uadnet.imageio.geometry import grid_mismatch
from uadnet.planning.planner import synomaly_sign
from uadnet.plans import Plans
from uadnet.scoring.calibration import FALSE_POSITIVE_RATES, calibrate
from uadnet.utilities.file_io import load_json


class BaselineError(ValueError):
    """The data does not fit a baseline (no plans, no reference cases, images not on one grid, ...)."""


def channel_signs(channel_names: Sequence[str]) -> np.ndarray:
    """Expected lesion contrast per channel, ``(c,)`` int: +1 hyperintense (FLAIR, T2, contrast-enhanced T1, and
    anything unknown), -1 hypointense (native T1), from the channel name alone (``synomaly_sign`` of that one
    channel)."""
    return np.array([synomaly_sign([name]) for name in channel_names], dtype=np.int64)


def without_clipping(plans: Plans) -> Plans:
    """A copy of ``plans`` whose per-channel normalisation keeps the plans' mapping (e.g. the case's 0th foreground
    percentile → 0 and its 98th → ``high_maps_to``, 0.7 for MRI) but does not clip at 1.

    The plans clip for the networks; for a baseline that scores intensities directly, clipping ties every voxel
    above the clip (without headroom: the brightest 2 % of each brain and most of a bright lesion) at 1.0, so lesion
    and healthy voxels could no longer be ranked (tiny demo, before the headroom: pooled AP 0.08 clipped vs 0.73).
    """
    return dataclasses.replace(plans, normalization=[dataclasses.replace(n, clip=False) for n in plans.normalization])


def check_grid(shape: Sequence[int], properties: dict[str, Any], reference_shape: Sequence[int],
               reference_properties: dict[str, Any], file: str | Path, reference_file: str | Path) -> None:
    """Raise :class:`BaselineError` naming ``file`` unless its grid (shape ``(z, y, x)``, spacing in mm and, for
    SimpleITK files, origin and direction, within ``uadnet.imageio.geometry.GRID_TOLERANCE``) is the
    reference case's grid."""
    diff = grid_mismatch(tuple(shape), properties, tuple(reference_shape), reference_properties)
    if diff is not None:
        raise BaselineError(f"{file} is not on the grid of the reference case {reference_file} ({diff}): the z-score "
                            "baseline needs all images on one (registered) grid. Register the images to a common "
                            "template first, or use the intensity baseline (-b intensity)")


def reference_split(splits_file: Path, fold: int = 0) -> tuple[list[str], list[str]]:
    """``(train, val)`` case identifiers of ``fold`` in ``splits_final.json``; the baselines fit on 'train' and
    calibrate on 'val' (never on test data)."""
    if not splits_file.is_file():
        raise FileNotFoundError(f"{splits_file} is missing: run uadnet_plan_and_preprocess for this dataset")
    splits = load_json(splits_file)
    if not isinstance(splits, list) or not 0 <= fold < len(splits):
        raise BaselineError(f"fold {fold} is not in {splits_file} ({len(splits) if isinstance(splits, list) else 0} "
                            "folds)")
    train, val = list(splits[fold]["train"]), list(splits[fold]["val"])
    if not train or not val:
        raise BaselineError(f"fold {fold} of {splits_file} needs training and validation cases, has {len(train)} and "
                            f"{len(val)}")
    return train, val


def calibrate_baseline(scores: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray]) -> dict[str, Any]:
    """Thresholds from the score maps of healthy validation cases (each with its boolean foreground), exactly as
    the trained methods are calibrated (``uadnet.scoring.calibration.calibrate``): voxel threshold at rate r = the
    (1 − r) quantile of all foreground voxel scores, for r in ``FALSE_POSITIVE_RATES``; case threshold = the 95th
    percentile of the case scores (mean of the top 1 % foreground voxels)."""
    result = calibrate(scores, foregrounds, FALSE_POSITIVE_RATES)
    result["achieved_false_positive_rates"] = achieved_false_positive_rates(scores, foregrounds,
                                                                            result["voxel_thresholds"])
    return result


def achieved_false_positive_rates(scores: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray],
                                  thresholds: dict[str, float]) -> dict[str, float]:
    """For each threshold, the fraction of healthy foreground voxels with ``score >= threshold`` (the mask rule).
    Above the nominal rate when many voxels tie at the threshold (e.g. clipped intensities)."""
    pooled = np.concatenate([np.asarray(s, np.float32)[np.asarray(f, bool)] for s, f in zip(scores, foregrounds)])
    return {k: float(np.mean(pooled >= t)) for k, t in thresholds.items()}
