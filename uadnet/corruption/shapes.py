"""Random soft anomaly shapes (box, ellipsoid, irregular blob) with physical sizes, as in DAG (DISYRE v2).

Shapes are built in mm (voxel offsets × spacing), so a rotated box stays a box under anisotropic spacing. Only a
bounding crop around the shape is computed, then pasted into a full-size ``(z, y, x)`` float32 mask. A 2D sample
(``z == 1``) gets in-plane (y, x) shapes and rotations; the slice spacing is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

SHAPE_TYPES = ("box", "ellipsoid", "blob")


def random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation matrix ``(ndim, ndim)`` (in-plane angle for 2D, Haar-uniform for 3D)."""
    if ndim == 2:
        t = rng.uniform(0.0, 2.0 * np.pi)
        return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _crop_coordinates(lo: np.ndarray, hi: np.ndarray, centre: np.ndarray, spacing: np.ndarray,
                      rotation: np.ndarray) -> list[np.ndarray]:
    """Rotated physical coordinates (mm) of the crop ``[lo, hi)``: ``q_j = sum_i R_ij p_i`` (broadcast arrays)."""
    nd = len(lo)
    axes = []
    for i in range(nd):
        shape = [1] * nd
        shape[i] = hi[i] - lo[i]
        axes.append(((np.arange(lo[i], hi[i]) - centre[i]) * spacing[i]).reshape(shape))
    return [sum(rotation[i, j] * axes[i] for i in range(nd)) for j in range(nd)]


def random_shape(shape_zyx: Sequence[int], foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float], size_mm: Sequence[float] = (10.0, 44.0),
                 types: Sequence[str] = SHAPE_TYPES, edge_sigma_voxels: Sequence[float] = (0.0, 5.0),
                 edge_probability: float = 0.7, rotate: bool = True,
                 center: Sequence[int] | None = None, size_distribution: str = "uniform") -> np.ndarray:
    """A soft mask ``(z, y, x)`` float32 in [0, 1]: one random shape centred on a random foreground voxel.

    ``size_mm``: (min, max) full extent (side / diameter) in mm, drawn per axis, ``size_distribution``
    ``uniform`` or ``log_uniform`` (as many shapes between 2 and 4 mm as between 20 and 40 mm). ``types``: subset
    of ``SHAPE_TYPES``. With probability ``edge_probability`` the edges are Gaussian-softened with σ ~ U(edge
    range) voxels of the finest axis (the same σ in mm on every axis; then rescaled so the peak is 1). The mask is 0
    outside ``foreground``; all zeros if it is empty.
    ``center``: fix the centre voxel ``(z, y, x)`` instead of drawing it (tests, visualisation).
    """
    shape_zyx = tuple(int(s) for s in shape_zyx)
    out = np.zeros(shape_zyx, np.float32)
    unknown = set(types) - set(SHAPE_TYPES)
    if unknown or not types:
        raise ValueError(f"unknown shape type(s) {sorted(unknown)}; choose from {SHAPE_TYPES}")
    if center is None:
        flat = np.flatnonzero(foreground)
        if flat.size == 0:
            return out
        center = np.unravel_index(flat[rng.integers(flat.size)], shape_zyx)
    kind = types[rng.integers(len(types))]
    is2d = shape_zyx[0] == 1
    sl = slice(1, 3) if is2d else slice(0, 3)
    dims = np.array(shape_zyx[sl])
    sp = np.asarray(spacing, float)[sl]
    c = np.asarray(center, int)[sl]
    nd = len(dims)
    if size_distribution == "uniform":
        semi = rng.uniform(size_mm[0], size_mm[1], nd) / 2.0  # semi-axes in mm
    elif size_distribution == "log_uniform":
        semi = np.exp(rng.uniform(np.log(size_mm[0]), np.log(size_mm[1]), nd)) / 2.0
    else:
        raise ValueError(f"corruption.size_distribution '{size_distribution}' is not supported; use 'uniform' or "
                         "'log_uniform' in uadnet_plans.json")
    rot = random_rotation(rng, nd) if rotate else np.eye(nd)
    sigma = rng.uniform(*edge_sigma_voxels) if rng.random() < edge_probability else 0.0
    sigma_axes = sigma * sp.min() / sp  # σ is in voxels of the finest axis: the same blur in mm on every axis
    # axis-aligned half extent of the rotated box (bounds the ellipsoid and blob too), in voxels, + blur margin
    half = np.ceil((np.abs(rot) @ semi) / sp).astype(int) + np.ceil(3 * sigma_axes).astype(int) + 1
    lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, dims)
    q = _crop_coordinates(lo, hi, c, sp, rot)
    if kind == "box":
        crop = np.ones(tuple(hi - lo), bool)
        for qj, a in zip(q, semi):
            crop &= np.abs(qj) <= a
    else:
        r2 = sum((qj / a) ** 2 for qj, a in zip(q, semi))
        if kind == "ellipsoid":
            crop = r2 <= 1.0
        else:  # irregular blob: smoothed noise thresholded inside an ellipsoid envelope
            noise = gaussian_filter(rng.standard_normal(r2.shape), 0.3 * semi.min() / sp, mode="wrap")
            noise /= noise.std() + 1e-8
            crop = (r2 <= 1.0) & ((1.0 - r2) + 0.5 * noise > 0.35)
            if not crop.any():
                crop = r2 <= 1.0
    soft = crop.astype(np.float32)
    if sigma > 0:
        soft = gaussian_filter(soft, sigma_axes, mode="nearest")
        peak = soft.max()
        if peak > 0:
            soft = np.minimum(soft / peak, 1.0)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    full_box = ((slice(0, 1),) + box) if is2d else box
    out[full_box] = soft.reshape(out[full_box].shape) * np.asarray(foreground[full_box], bool)
    return out


def mask_bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The bounding box (slices) of ``mask > 0`` grown by ``margin`` voxels, or None if the mask is empty."""
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != ax)))
        if hit.size == 0:
            return None
        box.append(slice(max(hit[0] - margin, 0), min(hit[-1] + 1 + margin, mask.shape[ax])))
    return tuple(box)
