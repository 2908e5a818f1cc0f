"""The template anatomy (MNI ICBM152 2009, shipped inside nilearn: no download) and random healthy variants.

Arrays are ``(z, y, x)`` (SimpleITK order: z = inferior→superior, y = posterior→anterior after LPS flip, x =
right→left). Spacings in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.transform import resize


@dataclass(frozen=True)
class Template:
    t1: np.ndarray  # (z, y, x) float32, 0..1
    gm: np.ndarray  # grey-matter probability
    wm: np.ndarray  # white-matter probability
    mask: np.ndarray  # brain mask (bool), ventricles included
    spacing: float  # isotropic, mm
    origin: tuple[float, float, float]  # LPS, mm (SimpleITK convention)
    direction: tuple[float, ...]  # 3x3 row-major, LPS

    @property
    def csf(self) -> np.ndarray:
        return np.clip(self.mask - self.gm - self.wm, 0, 1).astype(np.float32)


@lru_cache(maxsize=4)
def load_template(resolution_mm: float = 2.0) -> Template:
    """The template at ``resolution_mm`` (nilearn's 1 and 2 mm grids; other values resampled from 2 mm)."""
    try:
        from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template
    except ImportError as e:
        raise ImportError("the demo dataset needs nilearn (it ships the MNI152 template): "
                          "pip install 'uadnet[demo]'") from e
    native = 1 if resolution_mm <= 1.0 else 2
    images = [f(resolution=native) for f in (load_mni152_template, load_mni152_gm_template, load_mni152_wm_template)]
    # nibabel gives (x, y, z) in RAS; SimpleITK wants (z, y, x) in LPS
    t1, gm, wm = (np.asarray(im.get_fdata(), np.float32).transpose(2, 1, 0) for im in images)
    affine = images[0].affine
    zoom = native / resolution_mm
    if abs(zoom - 1) > 1e-6:
        t1, gm, wm = (np.clip(ndimage.zoom(a, zoom, order=1), 0, 1).astype(np.float32) for a in (t1, gm, wm))
    tissue = ndimage.binary_closing(gm + wm > 0.3, iterations=2)
    mask = ndimage.binary_fill_holes(tissue)
    t1 = np.where(mask, t1, 0).astype(np.float32)
    origin = (-float(affine[0, 3]), -float(affine[1, 3]), float(affine[2, 3]))
    return Template(t1, np.where(mask, gm, 0), np.where(mask, wm, 0), mask, float(resolution_mm), origin,
                    (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def smooth_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return n / (n.std() + 1e-8)


def random_deformation(shape: tuple[int, int, int], spacing: float, rng: np.random.Generator,
                       rotation_deg: float = 4.0, scale: float = 0.05, shift_mm: float = 3.0,
                       elastic_mm: float = 2.5, elastic_sigma_mm: float = 12.0) -> np.ndarray:
    """Sampling coordinates ``(3, z, y, x)`` (voxels) of a random small affine + smooth elastic deformation."""
    centre = (np.asarray(shape) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    a, b, c = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    matrix = (rz @ ry @ rx) * rng.uniform(1 - scale, 1 + scale, 3)[:, None]
    offset = rng.uniform(-shift_mm, shift_mm, 3) / spacing
    coords = np.tensordot(matrix.astype(np.float32), grid - centre[:, None, None, None], 1)
    coords += (centre + offset)[:, None, None, None]
    for k in range(3):
        coords[k] += smooth_noise(shape, elastic_sigma_mm / spacing, rng) * (elastic_mm / spacing)
    return coords


def warp(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field around 1 (about ±``strength``), from a coarse random grid."""
    coarse = rng.uniform(-1, 1, (4, 4, 4)).astype(np.float32)
    field = resize(coarse, shape, order=3, mode="edge")
    return np.exp(strength * field / (np.abs(field).max() + 1e-8)).astype(np.float32)
