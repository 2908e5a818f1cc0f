"""Intensity blobs: smooth regions whose intensity (colour) is scaled — validation anomalies shaped like lesions.

Each blob is a soft shape m (``shapes.random_shape``: box, ellipsoid or irregular blob, full extent log-uniform in
``size_mm`` per axis, edges softened by σ ~ U(``edge_sigma_voxels``)) centred on a random foreground voxel; inside it
every channel is multiplied by ``1 + s·r·g_c·m`` with sign s = ±1, relative change r log-uniform in
``relative_change`` (default 0.3–0.8: from 0.1, the development photographs' models scored most blobs near chance)
and, for images of several channels, a per-channel gain g_c ~ U(0.5, 1) (a change of colour, not only of brightness;
g = 1 for one channel). Then clipped to [0, 1]. No method trains on this family: ``validation.corruption:
intensity_blobs`` validates with it, an option (documentation/benchmarks.md, "Validation anomalies that rank runs").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from uadnet.corruption.base import Corrupted, unchanged
from uadnet.corruption.shapes import random_shape

if TYPE_CHECKING:
    from uadnet.plans import Plans

CHANNEL_GAIN = (0.5, 1.0)  # per-channel share of the change in images of several channels


@dataclass
class IntensityBlobs:
    """``count`` blobs of ``size_mm`` (full extent per axis, mm; the lower end raised to two voxels of the finest
    axis) with relative intensity changes ``relative_change`` (fractions, drawn log-uniformly; sign ±1)."""

    size_mm: Sequence[float] = (8.0, 40.0)
    count: int = 1
    relative_change: Sequence[float] = (0.3, 0.8)
    edge_sigma_voxels: Sequence[float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if len(self.size_mm) != 2 or not 0 < self.size_mm[0] <= self.size_mm[1]:
            raise ValueError(f"intensity blobs: size_mm must be [lo, hi] mm with 0 < lo <= hi, got {list(self.size_mm)}"
                             ": fix validation.small_size_mm or corruption.shape_size_mm in uadnet_plans.json")
        if len(self.relative_change) != 2 or not 0 < self.relative_change[0] <= self.relative_change[1]:
            raise ValueError("intensity blobs: relative_change must be [lo, hi] with 0 < lo <= hi, got "
                             f"{list(self.relative_change)}")
        if int(self.count) < 1:
            raise ValueError(f"intensity blobs: count must be >= 1, got {self.count}")

    @classmethod
    def from_plans(cls, plans: Plans) -> IntensityBlobs:
        """One blob per case, from the top of the small validation anomalies' sizes (``validation.small_size_mm``)
        to the largest planned shape (``corruption.shape_size_mm``, planned from the foreground's extent)."""
        low = float(plans.validation.small_size_mm[1])
        return cls(size_mm=(low, max(low, float(plans.corruption.shape_size_mm[1]))))

    @classmethod
    def small(cls, size_mm: Sequence[float]) -> IntensityBlobs:
        """One spot of ``size_mm`` with edges softened by at most one voxel (validation's small anomalies)."""
        return cls(size_mm=tuple(float(v) for v in size_mm), edge_sigma_voxels=(0.0, 1.0))

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        """Corrupt ``image`` (c, z, y, x) in [0, 1] inside ``foreground`` (z, y, x); ``spacing`` (z, y, x) mm (a
        single slice's z spacing is not used). ``foreign`` is ignored."""
        fg = np.asarray(foreground, bool)
        if not fg.any():
            return unchanged(image)
        finest = min(float(s) for s in (spacing[1:] if image.shape[1] == 1 else spacing))
        low = max(float(self.size_mm[0]), 2.0 * finest)
        sizes = (low, max(low, float(self.size_mm[1])))
        out = np.array(image, np.float32)
        mask = np.zeros(fg.shape, np.float32)
        lo, hi = (np.log(float(v)) for v in self.relative_change)
        for _ in range(int(self.count)):
            m = random_shape(fg.shape, fg, rng, spacing, sizes, edge_sigma_voxels=tuple(self.edge_sigma_voxels),
                             edge_probability=1.0, size_distribution="log_uniform")
            r = float(np.exp(rng.uniform(lo, hi))) * (1.0 if rng.random() < 0.5 else -1.0)
            gain = rng.uniform(*CHANNEL_GAIN, image.shape[0]) if image.shape[0] > 1 else np.ones(1)
            out *= 1.0 + np.float32(r) * gain.astype(np.float32)[:, None, None, None] * m[None]
            mask = np.maximum(mask, m)
        out = np.clip(out, 0.0, 1.0)
        change = np.abs(out - image).mean(axis=0)
        weight = float(mask.sum())
        severity = float(np.clip((mask * change).sum() / weight, 0.0, 1.0)) if weight > 0 else 0.0
        if severity == 0.0:
            return unchanged(image)
        return Corrupted(out, mask, severity)
