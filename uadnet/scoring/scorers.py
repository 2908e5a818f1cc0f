"""Scoring a whole volume with any method's scorer (validation, calibration and prediction all use this).

A scorer (:class:`uadnet.methods.base.Scorer`, made by the method) maps a batch of patches ``x`` (b, c, *patch) in
[0, 1] to ``(b, 1 + c, *patch)``: channel 0 is the anomaly score (≥ 0, larger = more anomalous), channels ``1..c``
the restoration x̂ (the healthy estimate). The scorers live with their methods (``uadnet/methods/<name>.py``).
A scorer whose score is a mean over members (:class:`uadnet.methods.base.MemberScorer`) can also give the member
scores, blended tile by tile like the score (:func:`score_volume_members`, only when asked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from uadnet.scoring.sliding_window import sliding_window_predict

Scorer = Callable[[Tensor], Tensor]


def score_volume(scorer: Scorer, volume: np.ndarray, patch_size: Sequence[int], step_size: float = 0.5,
                 sigma_scale: float = 0.125, batch_size: int = 4, device: str | torch.device = "cpu",
                 foreground: np.ndarray | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Score a preprocessed volume (c, z, y, x) by Gaussian-weighted sliding window (2D patches slice by slice,
    3D patches in the volume). Returns ``(score (z, y, x), restoration (c, z, y, x))`` float32; voxels outside
    ``foreground`` tiles get 0."""
    out = sliding_window_predict(volume, scorer, patch_size, 1 + volume.shape[0], step_size=step_size,
                                 sigma_scale=sigma_scale, batch_size=batch_size, device=device,
                                 foreground=foreground, progress=progress)
    return out[0], out[1:]


def score_volume_members(scorer: Scorer, volume: np.ndarray, patch_size: Sequence[int], step_size: float = 0.5,
                         sigma_scale: float = 0.125, batch_size: int = 4, device: str | torch.device = "cpu",
                         foreground: np.ndarray | None = None, progress: bool = False
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`score_volume` with a :class:`uadnet.methods.base.MemberScorer` (its ``members``): ``(score (z, y,
    x), restoration (c, z, y, x), member scores (M, z, y, x))`` float32, each member blended with the same Gaussian
    weights as the score (so their mean is the score up to rounding; score and restoration are bit for bit those of
    :func:`score_volume`). Extra memory over :func:`score_volume`: M × the volume's voxels × 4 bytes (twice that
    briefly while cropping)."""
    c = volume.shape[0]
    out = sliding_window_predict(volume, scorer.members, patch_size, 1 + c + scorer.num_members,
                                 step_size=step_size, sigma_scale=sigma_scale, batch_size=batch_size, device=device,
                                 foreground=foreground, progress=progress)
    return out[0], out[1:1 + c], out[1 + c:]
