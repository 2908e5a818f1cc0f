"""Scoring a whole volume with any method's scorer (validation, calibration and prediction all use this).

A scorer (:class:`uadnet.methods.base.Scorer`, made by the method) maps a batch of patches ``x`` (b, c, *patch) in
[0, 1] to ``(b, 1 + c, *patch)``: channel 0 is the anomaly score (≥ 0, larger = more anomalous), channels ``1..c``
the restoration x̂ (the healthy estimate). The scorers live with their methods (``uadnet/methods/<name>.py``).
A scorer whose score is a mean over members (:class:`uadnet.methods.base.MemberScorer`) can also give the member
scores, blended tile by tile like the score (:func:`score_volume_members`, only when asked).
Test-time mirroring (``mirror_axes``, nnU-Net's): each tile is also scored mirrored along every subset of the given
patch axes, the outputs mirrored back and averaged (:class:`MirroredScorer`); training mirrors on every axis, so the
mirrored tiles are images the restorer has seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from uadnet.scoring.mirroring import check_mirror_axes
from uadnet.scoring.sliding_window import sliding_window_predict

Scorer = Callable[[Tensor], Tensor]


class MirroredScorer:
    """``scorer`` averaged over test-time mirrorings: for every subset S of ``axes`` (patch axes, the empty one
    included: 2^len(axes) passes), ``flip_S(scorer(flip_S(x)))``; every output channel (score, restoration, member
    scores) is mirrored back before the mean. A :class:`uadnet.methods.base.MemberScorer` stays one."""

    def __init__(self, scorer: Scorer, axes: Sequence[int]) -> None:
        self.scorer, self.axes = scorer, tuple(int(a) for a in axes)
        dims = [a + 2 for a in self.axes]  # (b, c, *patch)
        self.flips = [s for k in range(len(dims) + 1) for s in itertools.combinations(dims, k)]
        if callable(getattr(scorer, "members", None)):
            self.num_members = int(getattr(scorer, "num_members", 1))
            self.members = lambda x: self._mean(scorer.members, x)

    def _mean(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        total = None
        for dims in self.flips:
            out = fn(torch.flip(x, dims) if dims else x).float()
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(self.flips)

    def __call__(self, x: Tensor) -> Tensor:
        return self._mean(self.scorer, x)


def mirrored(scorer: Scorer, mirror_axes: Sequence[int]) -> Scorer:
    """``scorer`` itself without ``mirror_axes``, else a :class:`MirroredScorer`."""
    return MirroredScorer(scorer, mirror_axes) if len(mirror_axes) else scorer


def score_volume(scorer: Scorer, volume: np.ndarray, patch_size: Sequence[int], step_size: float = 0.5,
                 sigma_scale: float = 0.125, batch_size: int = 4, device: str | torch.device = "cpu",
                 foreground: np.ndarray | None = None, progress: bool = False, mirror_axes: Sequence[int] = ()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Score a preprocessed volume (c, z, y, x) by Gaussian-weighted sliding window (2D patches slice by slice,
    3D patches in the volume), each tile also mirrored along ``mirror_axes`` (patch axes; :class:`MirroredScorer`).
    Returns ``(score (z, y, x), restoration (c, z, y, x))`` float32; voxels outside ``foreground`` tiles get 0."""
    scorer = mirrored(scorer, check_mirror_axes(mirror_axes, len(patch_size)))
    out = sliding_window_predict(volume, scorer, patch_size, 1 + volume.shape[0], step_size=step_size,
                                 sigma_scale=sigma_scale, batch_size=batch_size, device=device,
                                 foreground=foreground, progress=progress)
    return out[0], out[1:]


def score_volume_members(scorer: Scorer, volume: np.ndarray, patch_size: Sequence[int], step_size: float = 0.5,
                         sigma_scale: float = 0.125, batch_size: int = 4, device: str | torch.device = "cpu",
                         foreground: np.ndarray | None = None, progress: bool = False,
                         mirror_axes: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`score_volume` with a :class:`uadnet.methods.base.MemberScorer` (its ``members``): ``(score (z, y,
    x), restoration (c, z, y, x), member scores (M, z, y, x))`` float32, each mirrored as ``mirror_axes`` says and
    each member blended with the same Gaussian weights as the score (so their mean is the score up to rounding;
    score and restoration are bit for bit those of :func:`score_volume`). Extra memory over :func:`score_volume`:
    M × the volume's voxels × 4 bytes (twice that briefly while cropping)."""
    c, scorer = volume.shape[0], mirrored(scorer, check_mirror_axes(mirror_axes, len(patch_size)))
    out = sliding_window_predict(volume, scorer.members, patch_size, 1 + c + scorer.num_members,
                                 step_size=step_size, sigma_scale=sigma_scale, batch_size=batch_size, device=device,
                                 foreground=foreground, progress=progress)
    return out[0], out[1:1 + c], out[1 + c:]
