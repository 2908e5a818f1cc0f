"""Synomaly noise (Bi et al., "Synomaly noise and multi-stage diffusion", MedIA 2025).

``ε_syn = ε + d·(u + o)·M``: ``ε ~ N(0, 1)``; ``M`` = blobs where the Gaussian-smoothed ``ε`` (σ in voxels), min-max
rescaled to [0, 1], exceeds ``threshold`` (optionally restricted to the foreground); ``u ~ U(0, 1)`` drawn **once
per sample** (all blobs share it); offset ``o``; sign ``d`` (+1 hyperintense, -1 hypointense lesions).

Verified in the public code (``yuan-12138/Synomaly``, ``scripts_guided_diffusion/gaussian_diffusion.py``,
``generate_synomaly_noise``): the blobs come from blurring the same background noise (``cv2.GaussianBlur``, reflect
border), ``rescale_intensity`` to 0..255, a strict ``> threshold`` (BraTS: σ 3, 175, offset 0.5, d = +1; LiTS: σ 5,
175, 0.75, -1; ultrasound: σ 7, 150, 0.5, +1); regions outside the allowed mask are zeroed; the shift is
``d·(torch.rand(1) + o)``, one draw per image. Extensions here: several channels share one blob mask computed from
their channel-mean noise (scaled back to unit variance, identical to the reference for one channel), and a 3D
sample is smoothed in 3D (a 2D sample, ``z == 1``, only in y, x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from uadnet.corruption.base import Corrupted, unchanged

if TYPE_CHECKING:
    from uadnet.plans import Plans


def _sample(shape: Sequence[int], foreground: np.ndarray | None, rng: np.random.Generator, blur_sigma_voxels: float,
            threshold: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(ε, M, u)`` for a ``(c, z, y, x)`` shape; ``M`` (z, y, x) float32 in {0, 1}."""
    c, z = int(shape[0]), int(shape[1])
    eps = rng.standard_normal(tuple(shape), dtype=np.float32)
    base = eps.mean(axis=0, dtype=np.float64) * np.sqrt(c)
    sigma = (0.0 if z == 1 else blur_sigma_voxels, blur_sigma_voxels, blur_sigma_voxels)
    blur = ndimage.gaussian_filter(base, sigma, mode="mirror")
    lo, hi = blur.min(), blur.max()
    scaled = (blur - lo) / (hi - lo) if hi > lo else np.zeros_like(blur)
    m = scaled > threshold
    if foreground is not None:
        m &= np.asarray(foreground, bool)
    return eps, m.astype(np.float32), float(rng.random())


def synomaly_noise(shape: Sequence[int], foreground: np.ndarray | None, rng: np.random.Generator,
                   blur_sigma_voxels: float = 3.0, threshold: float = 175.0 / 255.0, offset: float = 0.5,
                   sign: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Synomaly noise ``ε_syn`` (``shape`` = (c, z, y, x), float32) and its blob mask ``M`` ((z, y, x) float32)."""
    eps, m, u = _sample(shape, foreground, rng, blur_sigma_voxels, threshold)
    return eps + np.float32(sign * (u + offset)) * m[None], m


@dataclass
class SynomalyNoise:
    """Synomaly noise with fixed parameters; ``sample`` for training, ``__call__`` (Corruption interface) for
    galleries: ``clip(x + d·(u+o)·M·image_scale, 0, 1)``, mask ``M``, severity ``(u + o) / (1 + o)``.

    ``image_scale`` (intensity per unit of noise shift, default 0.25) only serves visualisation: the DDPM sees the
    shift in noise units, where its image-domain size depends on the timestep.
    """

    blur_sigma_voxels: float = 3.0
    threshold: float = 175.0 / 255.0
    offset: float = 0.5
    sign: int = 1
    image_scale: float = 0.25

    @classmethod
    def from_plans(cls, plans: Plans) -> SynomalyNoise:
        p = plans.methods.synomaly
        return cls(p.blur_sigma_voxels, p.threshold, p.offset, p.sign)

    def sample(self, shape: Sequence[int], foreground: np.ndarray | None, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(ε_syn, M)`` for one ``(c, z, y, x)`` sample."""
        return synomaly_noise(shape, foreground, rng, self.blur_sigma_voxels, self.threshold, self.offset, self.sign)

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        _, m, u = _sample(image.shape, foreground, rng, self.blur_sigma_voxels, self.threshold)
        if not m.any():
            return unchanged(image)
        shift = np.float32(self.sign * (u + self.offset) * self.image_scale)
        out = np.clip(image + shift * m[None], 0, 1).astype(np.float32)
        return Corrupted(out, m, float((u + self.offset) / (1 + self.offset)))  # (u + o) rescaled to [0, 1]


class SynomalyTrainingNoise(SynomalyNoise):
    """The training form (``"synomaly_noise"``): the image stays clean and ``Corrupted.noise`` carries ``ε_syn``
    (``mask`` = M, severity ``(u + o)/(1 + o)``); the ``synomaly`` method lets the forward process add it."""

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        eps, m, u = _sample(image.shape, foreground, rng, self.blur_sigma_voxels, self.threshold)
        shift = np.float32(self.sign * (u + self.offset))
        severity = float((u + self.offset) / (1 + self.offset)) if m.any() else 0.0
        return Corrupted(image.astype(np.float32, copy=True), m, severity, noise=eps + shift * m[None])
