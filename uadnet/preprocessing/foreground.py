"""The foreground (body / ROI) of an image: a given mask, the nonzero region, or an Otsu threshold."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from uadnet.plans import ForegroundPlan


def zero_fraction(image: np.ndarray) -> float:
    """Fraction of voxels that are exactly 0 in every channel (``image``: c, z, y, x)."""
    return float(np.mean(np.all(image == 0, axis=0)))


def choose_foreground_method(plan: ForegroundPlan, image: np.ndarray, has_mask: bool) -> str:
    """Resolve ``auto``: ``mask`` if a mask file is given and allowed, ``nonzero`` for zero backgrounds, else ``otsu``."""
    if has_mask and plan.use_masks:
        return "mask"
    if plan.method != "auto":
        return plan.method
    return "nonzero" if zero_fraction(image) >= plan.min_zero_fraction else "otsu"


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    # per slice for one-slice images, in 3D otherwise
    return ndimage.binary_fill_holes(mask[0])[None] if mask.shape[0] == 1 else ndimage.binary_fill_holes(mask)


def compute_foreground(image: np.ndarray, method: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean foreground ``(z, y, x)`` of ``image`` ``(c, z, y, x)``.

    ``mask``: the nonzero voxels of the given mask. ``nonzero``: any channel nonzero, holes filled. ``otsu``:
    channel-mean above Otsu's threshold, largest connected component, holes filled. An empty result falls back
    to the whole image so that no case is lost.
    """
    if method == "mask":
        if mask is None:
            raise ValueError("foreground method 'mask' needs a mask")
        fg = np.asarray(mask).reshape(image.shape[1:]) > 0
    elif method == "nonzero":
        fg = _fill_holes(np.any(image != 0, axis=0))
    elif method == "otsu":
        mean = image.mean(axis=0)
        if np.ptp(mean) == 0:
            fg = np.ones(mean.shape, bool)
        else:
            fg = mean > threshold_otsu(mean)
            labels, n = ndimage.label(fg)
            if n > 1:
                sizes = np.bincount(labels.ravel())
                sizes[0] = 0
                fg = labels == np.argmax(sizes)
            fg = _fill_holes(fg)
    else:
        raise ValueError(f"unknown foreground method '{method}' (use auto, nonzero, otsu or a masksTr mask)")
    if not fg.any():
        fg = np.ones(image.shape[1:], bool)
    return fg
