"""Resampling between grids (scikit-image / batchgenerators do the interpolation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from batchgenerators.augmentations.utils import resize_segmentation
from skimage.transform import resize


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> list[int]:
    """Voxel counts ``(z, y, x)`` covering the same extent (mm) at ``target_spacing``; at least 1 per axis."""
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing)]


def resample_data(data: np.ndarray, new_shape: Sequence[int], order: int = 3) -> np.ndarray:
    """Resize each channel of ``data`` ``(c, z, y, x)`` to ``new_shape`` (spline ``order``, edge mode).

    When the slice count is unchanged the slices are resized independently (no interpolation across slices,
    and ~5x faster than a 3D spline over the volume)."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data.astype(np.float32, copy=False)

    def spline(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return resize(a.astype(np.float32, copy=False), shape, order=order, mode="edge", anti_aliasing=False,
                      preserve_range=True)

    out = np.empty((data.shape[0], *new_shape), np.float32)
    for c in range(data.shape[0]):
        if new_shape[0] == data.shape[1]:  # slice axis unchanged (2D configurations): slice by slice
            for z in range(new_shape[0]):
                out[c, z] = spline(data[c, z], new_shape[1:])
        else:
            out[c] = spline(data[c], new_shape)
    return out


def resample_mask(mask: np.ndarray, new_shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resize a boolean/label mask ``(z, y, x)`` without inventing intermediate labels."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(mask.shape) == new_shape:
        return mask
    return resize_segmentation(mask.astype(np.uint8), new_shape, order=order).astype(mask.dtype)
