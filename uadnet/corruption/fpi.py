"""FPI, foreign patch interpolation (DISYRE v1, ``cold_multistep``): ``x_c = (1 - α·m)·x + α·m·x_fp``.

``x_fp`` is another training image of the same shape (supplied by the data loader; the patch is taken at the same
location), or, when none is given, a randomly shifted and flipped copy of the image itself. α ~ U(severity_range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from uadnet.corruption.base import Corrupted, severity_range_of, unchanged
from uadnet.corruption.shapes import SHAPE_TYPES, random_shape

if TYPE_CHECKING:
    from uadnet.plans import Plans


def foreign_image(image: np.ndarray, rng: np.random.Generator, foreign: np.ndarray | None = None) -> np.ndarray:
    """The foreign image ``(c, z, y, x)``: ``foreign`` (another case; centre-cropped or wrap-padded to ``image``'s
    spatial shape when it differs), or ``image`` randomly rolled by 25–75 % of each spatial axis and randomly flipped
    (in-plane only for 2D)."""
    if foreign is not None:
        if foreign.shape[0] != image.shape[0] or foreign.ndim != image.ndim:
            raise ValueError(f"foreign image shape {foreign.shape} does not fit image shape {image.shape}")
        for axis in range(1, image.ndim):
            have, want = foreign.shape[axis], image.shape[axis]
            if have > want:
                foreign = np.take(foreign, range((have - want) // 2, (have - want) // 2 + want), axis=axis)
            elif have < want:
                pad = [(0, 0)] * image.ndim
                pad[axis] = ((want - have) // 2, want - have - (want - have) // 2)
                foreign = np.pad(foreign, pad, mode="wrap")
        return foreign
    axes = (2, 3) if image.shape[1] == 1 else (1, 2, 3)
    shifts = [int(rng.uniform(0.25, 0.75) * image.shape[a]) for a in axes]
    flips = [a for a in axes if rng.random() < 0.5]
    out = np.roll(image, shifts, axis=axes)
    return np.flip(out, axis=flips) if flips else out


def fpi_blend(image: np.ndarray, foreign: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - α·m)·x + α·m·x_fp`` as float32 (``x + α·m·(x_fp - x)``; exactly ``x`` where ``α·m == 0``)."""
    w = np.float32(alpha) * mask[None].astype(np.float32)
    return (image + w * (foreign - image)).astype(np.float32)


@dataclass
class FPI:
    """Foreign patch interpolation. Sizes in mm (full extent), edge σ in voxels, α ~ U(severity_range)."""

    size_mm: Sequence[float] = (10.0, 44.0)
    shape_types: Sequence[str] = SHAPE_TYPES
    edge_sigma_voxels: Sequence[float] = (0.0, 5.0)
    edge_probability: float = 0.7
    severity_range: Sequence[float] = (0.0, 1.0)
    size_distribution: str = "uniform"

    @classmethod
    def from_plans(cls, plans: Plans) -> FPI:
        cp = plans.corruption
        return cls(tuple(cp.shape_size_mm), tuple(cp.shape_types), tuple(cp.edge_sigma_voxels),
                   cp.edge_smoothing_probability, severity_range_of(cp), cp.size_distribution)

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float], *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        mask = random_shape(image.shape[1:], foreground, rng, spacing, self.size_mm, self.shape_types,
                            self.edge_sigma_voxels, self.edge_probability,
                            size_distribution=self.size_distribution)
        alpha = float(rng.uniform(*self.severity_range))
        fp = foreign_image(image, rng, foreign)
        if alpha == 0.0 or not mask.any():
            return unchanged(image)
        return Corrupted(np.clip(fpi_blend(image, fp, mask, alpha), 0.0, 1.0), mask, alpha)
