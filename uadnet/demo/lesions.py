"""Test-set lesions, deliberately unlike the training corruptions (no boxes/spheres with foreign texture).

Each generator takes the healthy tissue maps of one case and returns per-channel multiplicative intensity
factors (1 = unchanged) and the label: exactly the voxels whose factors differ from 1 (edges are softened inside
the label, never outside it). Sizes in mm; arrays ``(z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uadnet.demo.anatomy import smooth_noise


@dataclass
class Lesion:
    kind: str
    factors: dict[str, np.ndarray]  # channel name -> multiplicative factor (z, y, x)
    label: np.ndarray  # bool (z, y, x)
    displacement: np.ndarray | None = None  # (3, z, y, x) voxels, mass effect applied before painting


def _distance_mm(shape: tuple[int, ...], centre: np.ndarray, spacing: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) * spacing


def _pick(where: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = np.argwhere(where)
    return idx[rng.integers(len(idx))].astype(np.float32)


def _soften(regions: list[np.ndarray], sigma_vox: float = 0.7, floor: float = 0.2) -> tuple[list[np.ndarray], np.ndarray]:
    """Partial-volume weights of ``regions`` and their label (voxels whose total weight is >= ``floor``).

    Weights are zeroed outside the label, so the label is exactly where intensities change.
    """
    soft = [ndimage.gaussian_filter(r.astype(np.float32), sigma_vox) for r in regions]
    label = sum(soft) >= floor
    return [np.where(label, s, 0).astype(np.float32) for s in soft], label


def _blend(level: float, soft: np.ndarray) -> np.ndarray:
    """Factor that moves intensities to ``level`` x their value where ``soft`` = 1."""
    return (1 + (level - 1) * soft).astype(np.float32)


def tumour(mask: np.ndarray, gm: np.ndarray, wm: np.ndarray, spacing: float, rng: np.random.Generator) -> Lesion:
    """Necrotic core + enhancing rim + edema, irregular, with mild mass effect."""
    radius = rng.uniform(8, 18)
    deep = ndimage.distance_transform_edt(mask) * spacing > radius * 1.2
    centre = _pick(deep if deep.any() else mask, rng)
    irregular = _distance_mm(mask.shape, centre, spacing) / radius + 0.25 * smooth_noise(mask.shape, 6 / spacing, rng)
    core, rim = irregular < 0.45, (irregular >= 0.45) & (irregular < 0.7)
    edema = (irregular >= 0.7) & (irregular < 1.0 + 0.6 * (wm > 0.5)) & mask  # edema spreads along white matter
    (s_core, s_rim, s_edema), label = _soften([core & mask, rim & mask, edema])
    t1 = _blend(0.35, s_core) * _blend(1.15, s_rim) * _blend(0.8, s_edema)
    flair = _blend(0.5, s_core) * _blend(1.5, s_rim) * _blend(1.7, s_edema)
    d = _distance_mm(mask.shape, centre, spacing)
    push = rng.uniform(1.5, 3.0) / spacing * np.exp(-(d / (1.5 * radius)) ** 2)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in mask.shape], indexing="ij")
    displacement = np.stack([-(g - c) / (d / spacing + 1e-3) * push for g, c in zip(grid, centre)])
    return Lesion("tumour", {"T1": t1, "FLAIR": flair}, label, displacement)


def white_matter_hyperintensities(mask: np.ndarray, gm: np.ndarray, wm: np.ndarray, spacing: float,
                                  rng: np.random.Generator) -> Lesion:
    """3-8 small irregular blobs (radius 2-6 mm) in white matter, bright on FLAIR, slightly dark on T1."""
    label = np.zeros(mask.shape, bool)
    core_wm = wm > 0.8
    for _ in range(rng.integers(3, 9)):
        centre = _pick(core_wm if core_wm.any() else mask, rng)
        r = rng.uniform(2, 6)
        blob = _distance_mm(mask.shape, centre, spacing) / r + 0.3 * smooth_noise(mask.shape, 1.5 / spacing, rng) < 1
        label |= blob
    (soft,), label = _soften([label & (wm > 0.3)], 0.5)
    return Lesion("wmh", {"T1": _blend(0.85, soft), "FLAIR": _blend(1.8, soft)}, label)


def infarct(mask: np.ndarray, gm: np.ndarray, wm: np.ndarray, spacing: float, rng: np.random.Generator) -> Lesion:
    """A wedge in grey + white matter, its base on the cortex and its tip pointing inwards (15-35 mm long): dark on
    T1, moderately bright on FLAIR."""
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(4 / spacing)))
    base = _pick(edge, rng)
    centre = np.array(ndimage.center_of_mass(mask), np.float32)
    axis = (centre - base) / (np.linalg.norm(centre - base) + 1e-6)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in mask.shape], indexing="ij"))
    rel = (grid - base[:, None, None, None]) * spacing
    along = np.tensordot(axis, rel, 1)
    across = np.sqrt(np.maximum((rel ** 2).sum(0) - along ** 2, 0))
    length, angle = rng.uniform(15, 35), np.deg2rad(rng.uniform(15, 28))
    wobble = 0.2 * smooth_noise(mask.shape, 4 / spacing, rng)
    wedge = (along > -2) & (along < length * (1 + wobble)) & (across < np.tan(angle) * (length - along) + 2)
    (soft,), label = _soften([wedge & mask & (gm + wm > 0.5)])
    return Lesion("infarct", {"T1": _blend(0.55, soft), "FLAIR": _blend(1.35, soft)}, label)


GENERATORS = (tumour, white_matter_hyperintensities, infarct)
