"""Scorers: a restorer network → anomaly score patches. Used by validation, calibration and prediction.

A scorer maps a batch of patches ``x`` (b, c, *patch) in [0, 1] to ``(b, 1 + c, *patch)``: channel 0 is the
anomaly score (≥ 0, larger = more anomalous), channels ``1..c`` the restoration x̂ (the healthy estimate).
Severity convention everywhere: α = 0 clean, α = 1 most corrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from uadnet.scoring.sliding_window import sliding_window_predict
from uadnet.utilities.torch_utils import autocast


class Scorer(Protocol):
    def __call__(self, x: Tensor) -> Tensor: ...


class ColdEnsembleScorer:
    """Ensembled cold diffusion (DISYRE v2 / DAG): score = mean over k of |x − f(x, α_k)|, channel-mean.

    All K severities run in one forward pass (the batch is repeated K times); the restoration returned is the
    mean of the K restorations.
    """

    def __init__(self, model: nn.Module, severities: Sequence[float], precision: str = "fp32") -> None:
        if not severities or not all(0.0 < a <= 1.0 for a in severities):
            raise ValueError(f"ensemble severities must be in (0, 1], got {list(severities)}")
        self.model, self.severities, self.precision = model, [float(a) for a in severities], precision

    def __call__(self, x: Tensor) -> Tensor:
        b, k = x.shape[0], len(self.severities)
        alphas = torch.tensor(self.severities, dtype=torch.float32, device=x.device).repeat_interleave(b)
        with autocast(x.device, self.precision):
            restored = self.model(x.repeat(k, *[1] * (x.ndim - 1)), alphas)
        restored = restored.float().reshape(k, *x.shape)
        score = (x.unsqueeze(0) - restored).abs().mean(dim=(0, 2)).unsqueeze(1)
        return torch.cat([score, restored.mean(0)], dim=1)


class ColdMultistepScorer:
    """Multi-step cold-diffusion restoration (DISYRE, reference formulation): from α_T = ``start_severity`` (1 in the
    reference) down to 0 in ``num_steps`` equal steps, ``x̂₀ = f(x_t, α_t)``, ``x_{t-1} = clip(x̂₀ + (α_{t-1} / α_t)
    (x_t − x̂₀), 0, 1)``; score = the mean over steps of the restoration residual ``|x_t − x̂₀|`` (channel mean);
    restoration = the final ``x_0``."""

    def __init__(self, model: nn.Module, num_steps: int, start_severity: float, precision: str = "fp32") -> None:
        if num_steps < 1 or not 0.0 < start_severity <= 1.0:
            raise ValueError(f"need num_steps >= 1 and start_severity in (0, 1], got {num_steps}, {start_severity}")
        self.model, self.precision = model, precision
        self.alphas = np.linspace(start_severity, 0.0, num_steps + 1).tolist()

    def __call__(self, x: Tensor) -> Tensor:
        current, score = x, torch.zeros_like(x[:, :1])
        for a_t, a_next in zip(self.alphas[:-1], self.alphas[1:]):
            with autocast(x.device, self.precision):
                x0 = self.model(current, torch.full((x.shape[0],), a_t, device=x.device)).float()
            score = score + (current - x0).abs().mean(1, keepdim=True)
            current = (x0 + (a_next / a_t) * (current - x0)).clamp(0.0, 1.0)
        return torch.cat([score / (len(self.alphas) - 1), current], dim=1)


class ReconstructionScorer:
    """Plain reconstruction (the autoencoder baseline): score = |x − f(x)|, channel mean; restoration f(x)."""

    def __init__(self, model: nn.Module, precision: str = "fp32") -> None:
        self.model, self.precision = model, precision

    def __call__(self, x: Tensor) -> Tensor:
        with autocast(x.device, self.precision):
            restored = self.model(x).float()
        return torch.cat([(x - restored).abs().mean(1, keepdim=True), restored], dim=1)


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
