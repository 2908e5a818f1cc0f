"""Uncertainty maps (``uadnet_predict --save_uncertainty``): how much the ensemble's members disagree, per voxel.

Definition: the population standard deviation (ddof 0) over the ensemble's members of their anomaly maps, each
postprocessed as its fold's map is (``postprocessing.json``, residual normalisation included, so every member is on
the scale of its fold's calibrated map), in the same units as the anomaly map. The members are

- ``cold_ensemble``: the K severities α_k of the plans (member score ``|x − f(x, α_k)|``, channel mean) × the F
  folds, K·F members; their mean is the fold mean of the folds' maps when the postprocessing is linear in the score
  (foreground mask, Gaussian smoothing, residual normalisation — features from the fold's mean restoration); median
  smoothing and small-component removal act on each member, so there it is close to, not exactly, the map;
- every other method: the F folds' maps (its one restoration per patch — one seeded diffusion sample, or one
  deterministic multi-step / multi-stage trajectory — has no exchangeable members), so it needs F ≥ 2.

Fewer than two members is refused (:func:`check_members`). The map is computed on the preprocessed grid, brought back
to the input grid like the anomaly map (same inverse preprocessing, linear interpolation, 0 outside the crop) and
written as ``<case>_uncertainty<ending>`` float32 (≥ 0). Memory: two float32 volumes for the running mean and sum of
squared deviations (Welford), plus, for ``cold_ensemble``, K member maps per fold in the sliding window
(:func:`uadnet.scoring.scorers.score_volume_members`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFINITION = ("population standard deviation over the ensemble members of their postprocessed anomaly maps, in "
              "anomaly-map units; members = severities x folds (cold_ensemble) or folds (other methods)")


class UncertaintyError(ValueError):
    """``--save_uncertainty`` asked of an ensemble with fewer than two members."""


def check_members(method: str, folds: Sequence[str], members_per_fold: int) -> int:
    """The number of members (``members_per_fold × len(folds)``); :class:`UncertaintyError` saying what to do when it
    is below 2."""
    total = members_per_fold * len(folds)
    if total >= 2:
        return total
    raise UncertaintyError(
        f"--save_uncertainty needs at least two ensemble members, this prediction has {total}: {method} gives one "
        f"score per fold (members are folds) and it uses fold(s) {', '.join(folds)}. Predict with two or more "
        "folds (-f 0 1 ...; train them with uadnet_train DATASET FOLD), or with cold_ensemble, whose severities are "
        "members")


def members_description(folds: Sequence[str], members_per_fold: int) -> str:
    """E.g. ``"4 severities x 2 folds (0, 1)"`` or ``"2 folds (0, 1)"``."""
    names = f"{len(folds)} fold(s) ({', '.join(folds)})"
    return f"{members_per_fold} severities x {names}" if members_per_fold > 1 else names


class MemberSpread:
    """Running per-voxel mean and spread of member maps (Welford's update, float32): exactly 0 for identical
    members. Memory: two float32 arrays of ``shape``."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.count = 0
        self.mean = np.zeros(tuple(shape), np.float32)
        self.m2 = np.zeros(tuple(shape), np.float32)

    def add(self, member: np.ndarray) -> None:
        """Add one member map (same shape)."""
        member = np.asarray(member, np.float32)
        self.count += 1
        delta = member - self.mean
        self.mean += delta / np.float32(self.count)
        self.m2 += delta * (member - self.mean)

    def std(self) -> np.ndarray:
        """Population standard deviation (ddof 0) over the members added, float32, ≥ 0."""
        if self.count < 1:
            raise ValueError("no member was added")
        return np.sqrt(np.maximum(self.m2, 0) / np.float32(self.count)).astype(np.float32)


def _region(values: np.ndarray, where: np.ndarray) -> dict[str, float | int | None]:
    inside = np.asarray(values, np.float64)[np.asarray(where, bool)]
    if inside.size == 0:
        return {"voxels": 0, "mean": None, "p95": None}
    return {"voxels": int(inside.size), "mean": float(inside.mean()), "p95": float(np.percentile(inside, 95))}


def uncertainty_summary(uncertainty: np.ndarray, foreground: np.ndarray, mask: np.ndarray, members: int,
                        description: str) -> dict:
    """The record's ``uncertainty`` entry, on the input grid: mean and 95th percentile (anomaly-map units) inside the
    foreground (the preprocessing's, brought back with nearest-neighbour interpolation) and inside the mask (``null``
    when the region is empty), with the member count."""
    return {"members": members, "members_are": description, "foreground": _region(uncertainty, foreground),
            "mask": _region(uncertainty, mask)}
