"""Voxel-wise z-score against the healthy training population, for images that share one (registered) grid.

Every image is normalised per channel exactly as the preprocessor does it (its foreground, found the same way,
and ``uadnet.preprocessing.normalization.normalize``: the plans' ``low`` → 0 and ``high`` → 1, clipped to [0, 1]
only if the plans given clip, 0 outside the foreground), but on the input grid:
no cropping, no resampling, so the voxels of all cases correspond without any registration step of ours
("registration-free alignment": the images must already be aligned, e.g. to a template, which is checked).

Fit: per voxel and channel the mean μ and the standard deviation σ (population, ddof = 0) of the reference
cases, σ floored at ``STD_FLOOR``. Score: ``max_c max(0, sign_c · (x_c − μ_c) / σ_c)`` inside the case's
foreground, 0 outside, in units of (floored) standard deviations; ``sign_c`` +1 for channels where lesions are
bright, −1 where they are dark (native T1). The case score is computed on the input grid.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uadnet.plans import Plans
from uadnet.preprocessing.foreground import choose_foreground_method, compute_foreground
from uadnet.preprocessing.normalization import normalize
from uadnet.scoring.calibration import case_score
from uadnet.utilities.file_io import atomic_path, load_json, save_json

#: lower bound of σ, in normalised intensity units (5 % of [0, 1]; with the MRI headroom, where the upper
#: percentile maps to 0.7, about 7 % of the low-to-high range): where the reference cases barely vary (e.g.
#: background that is 0 in all of them), a tiny σ would turn noise into huge z-scores
STD_FLOOR = 0.05


@dataclass
class ZScoreStatistics:
    mean: np.ndarray  # (c, z, y, x) float32, normalised intensity units
    std: np.ndarray  # (c, z, y, x) float32, floored at std_floor
    num_cases: int
    std_floor: float = STD_FLOOR


def normalize_on_input_grid(image: np.ndarray, plans: Plans) -> tuple[np.ndarray, np.ndarray]:
    """``(data, foreground)``: ``image`` ``(c, z, y, x)`` normalised per channel as ``preprocess_case`` does it
    with these ``plans`` (0 outside the foreground), and its boolean foreground ``(z, y, x)``, both on the input
    grid.

    The foreground is found like the preprocessor finds it at prediction (no mask file: ``nonzero`` or Otsu,
    chosen by the plans), on the transposed image, then transposed back.
    """
    if image.ndim != 4:
        raise ValueError(f"expected an image of shape (c, z, y, x), got {image.shape}")
    transposed = image.transpose([0, *[a + 1 for a in plans.transpose_forward]])
    method = choose_foreground_method(plans.foreground, transposed, has_mask=False)
    foreground = compute_foreground(transposed, method).transpose(plans.transpose_backward)
    data, _ = normalize(image, foreground, plans.normalization)
    return data, foreground


def fit_zscore(images: Iterable[np.ndarray], std_floor: float = STD_FLOOR) -> ZScoreStatistics:
    """Per-voxel mean and standard deviation (ddof = 0, floored at ``std_floor``) of normalised images
    ``(c, z, y, x)`` that all have the same shape (accumulated in float64, one image in memory at a time)."""
    total = squares = None
    n = 0
    for image in images:
        x = np.asarray(image, np.float64)
        if total is None:
            total, squares = np.zeros_like(x), np.zeros_like(x)
        elif x.shape != total.shape:
            raise ValueError(f"image {n} has shape {x.shape}, the first one {total.shape}: the z-score baseline needs "
                             "all images on one grid")
        total += x
        squares += x * x
        n += 1
    if total is None:
        raise ValueError("the z-score baseline needs at least one reference case")
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
    return ZScoreStatistics(mean.astype(np.float32), np.maximum(std, std_floor).astype(np.float32), n,
                            float(std_floor))


def zscore_map(data: np.ndarray, foreground: np.ndarray, stats: ZScoreStatistics, signs: np.ndarray) -> np.ndarray:
    """``max_c max(0, sign_c · (x_c − μ_c) / σ_c)`` ``(z, y, x)`` float32 for a normalised image ``data``
    ``(c, z, y, x)``; 0 outside ``foreground`` ``(z, y, x)``."""
    data = np.asarray(data, np.float32)
    if data.shape != stats.mean.shape:
        raise ValueError(f"image shape {data.shape} differs from the reference statistics {stats.mean.shape}: the "
                         "z-score baseline needs all images on one grid")
    signs = np.asarray(signs, np.float32).reshape(-1, *([1] * (data.ndim - 1)))
    if signs.shape[0] != data.shape[0]:
        raise ValueError(f"{signs.shape[0]} sign(s) for {data.shape[0]} channel(s)")
    z = signs * (data - stats.mean) / stats.std
    score = np.maximum(z.max(axis=0), 0.0)
    return np.where(np.asarray(foreground, bool), score, 0.0).astype(np.float32)


def score_case(image: np.ndarray, plans: Plans, stats: ZScoreStatistics, signs: np.ndarray) -> dict[str, Any]:
    """Score one case read by the dataset's reader (``image`` ``(c, z, y, x)``, on the reference grid).

    Returns ``map`` ``(z, y, x)`` float32 on the input grid, ``foreground``, ``score`` (case score of the map
    inside the foreground, input grid) and ``seconds``.
    """
    t0 = time.perf_counter()
    data, foreground = normalize_on_input_grid(image, plans)
    t1 = time.perf_counter()
    amap = zscore_map(data, foreground, stats, signs)
    return {"map": amap, "foreground": foreground, "score": case_score(amap, foreground),
            "seconds": {"preprocessing": t1 - t0, "scoring": time.perf_counter() - t1, "export": 0.0}}


def save_statistics(stats: ZScoreStatistics, path: str | Path, metadata: dict[str, Any]) -> None:
    """``path`` (``.npz``, compressed, no pickle: ``mean``, ``std``) and ``path`` with ``.json`` (``metadata`` +
    the number of cases and the floor), both written atomically."""
    path = Path(path)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, mean=stats.mean, std=stats.std)
    save_json({**metadata, "num_cases": stats.num_cases, "std_floor": stats.std_floor,
               "shape_czyx": list(stats.mean.shape)}, path.with_suffix(".json"))


def load_statistics(path: str | Path) -> ZScoreStatistics:
    """Read what :func:`save_statistics` wrote."""
    path = Path(path)
    meta = load_json(path.with_suffix(".json"))
    with np.load(path, allow_pickle=False) as f:
        return ZScoreStatistics(f["mean"], f["std"], int(meta["num_cases"]), float(meta["std_floor"]))
