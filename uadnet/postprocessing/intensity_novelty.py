"""Intensity novelty: how rare a voxel's intensity (or colour) is among healthy foreground voxels.

A restorer reproduces what it was never taught to remove — a spot of a few voxels passes through it unchanged, so
the residual does not show it — while thresholding finds such spots when they are brighter than anything healthy,
and nothing else. This term is that part of thresholding, for both tails and for several channels: a smoothed
joint histogram of the preprocessed intensities of the fold's healthy validation foreground (up to three channels;
64, 32² or 16³ bins over the healthy range plus a margin, Gaussian σ = 1 bin) gives ``novelty = −log p`` per voxel;
voxels outside the healthy range fall in the empty margin and are the most novel. The term added to the map is

    ``weight · scale · max(novelty / normaliser − 1, 0)``

where ``normaliser`` is the ``quantile`` of healthy novelty (each validation case scored with the histogram of the
*other* cases, so healthy tissue is not judged by its own voxels) and ``scale`` the same quantile of the healthy
maps (map units): zero for every intensity as common as the healthy ones, growing beyond. ``weight`` is chosen on
the validation maps (:func:`uadnet.postprocessing.decide_postprocessing`; 0: not used). Added on the preprocessed
grid after every other step (:func:`uadnet.postprocessing.apply_postprocessing`), so smoothing does not erase it;
measured in ``documentation/benchmarks.md`` (Intensity novelty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

MAX_CHANNELS = 3  # joint histograms beyond three channels are too sparse for a few healthy cases
BINS_PER_CHANNEL = {1: 64, 2: 32, 3: 16}
MARGIN = 0.1  # of the healthy range, on each side: where unseen intensities land
SMOOTHING_BINS = 1.0
PSEUDO_COUNT = 0.01  # per bin, after smoothing: −log p stays finite in empty bins


@dataclass(frozen=True)
class IntensityNovelty:
    """Per-channel histogram ranges (``lows``/``highs``, preprocessed intensity units, margin included), the
    flattened −log density table (C order over ``bins`` per channel), ``normaliser`` (healthy novelty quantile),
    ``scale`` (healthy map quantile, map units), ``quantile`` and the chosen ``weight``."""

    lows: tuple[float, ...]
    highs: tuple[float, ...]
    bins: int
    log_density: tuple[float, ...]
    normaliser: float
    scale: float
    quantile: float
    weight: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.lows) == len(self.highs) <= MAX_CHANNELS:
            raise ValueError(f"intensity novelty needs 1 to {MAX_CHANNELS} channel ranges, got {len(self.lows)}")
        if len(self.log_density) != self.bins ** len(self.lows):
            raise ValueError(f"intensity novelty table must hold {self.bins}^{len(self.lows)} values, got "
                             f"{len(self.log_density)}")
        if not (self.normaliser > 0 and self.scale > 0 and self.weight >= 0):
            raise ValueError("intensity novelty needs a positive normaliser and scale and a weight >= 0")
        if any(h <= lo for lo, h in zip(self.lows, self.highs)):
            raise ValueError("intensity novelty ranges must have high > low")

    def novelty(self, image: np.ndarray) -> np.ndarray:
        """``−log p`` (z, y, x) float32 of every voxel of ``image`` (c, z, y, x, preprocessed)."""
        table = np.asarray(self.log_density, np.float32).reshape((self.bins,) * len(self.lows))
        return table[_bin_index(image, self.lows, self.highs, self.bins)]

    def term(self, image: np.ndarray) -> np.ndarray:
        """``weight · scale · max(novelty / normaliser − 1, 0)`` (z, y, x) float32, in map units."""
        excess = np.maximum(self.novelty(image) / np.float32(self.normaliser) - 1, 0)
        return (np.float32(self.weight * self.scale) * excess).astype(np.float32)

    def with_weight(self, weight: float) -> IntensityNovelty:
        return replace(self, weight=float(weight))

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """Everything but the density table (which stays in the fold's ``postprocessing.json``)."""
        return {k: v for k, v in asdict(self).items() if k != "log_density"}

    @classmethod
    def from_dict(cls, d: dict) -> IntensityNovelty:
        return cls(tuple(float(v) for v in d["lows"]), tuple(float(v) for v in d["highs"]), int(d["bins"]),
                   tuple(float(v) for v in d["log_density"]), float(d["normaliser"]), float(d["scale"]),
                   float(d["quantile"]), float(d.get("weight", 0.0)))


def _bin_index(image: np.ndarray, lows: Sequence[float], highs: Sequence[float], bins: int) -> tuple[np.ndarray, ...]:
    """Per channel, the bin (clamped to [0, bins − 1]) of every voxel: a tuple of (z, y, x) index arrays."""
    image = np.asarray(image, np.float32)
    if image.ndim != 4 or image.shape[0] != len(lows):
        raise ValueError(f"intensity novelty was fitted on {len(lows)} channel(s); got an image of shape "
                         f"{image.shape} (expected (c, z, y, x))")
    return tuple(np.clip(((image[c] - lo) / (hi - lo) * bins).astype(np.intp), 0, bins - 1)
                 for c, (lo, hi) in enumerate(zip(lows, highs)))


def _counts(values: np.ndarray, lows: Sequence[float], highs: Sequence[float], bins: int) -> np.ndarray:
    """Joint histogram (``bins`` per channel) of ``values`` (c, n)."""
    index = _bin_index(values[:, :, None, None], lows, highs, bins)
    flat = np.ravel_multi_index(tuple(i.ravel() for i in index), (bins,) * len(lows))
    return np.bincount(flat, minlength=bins ** len(lows)).reshape((bins,) * len(lows))


def leave_one_out(novelty: IntensityNovelty, images: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray]
                  ) -> list[IntensityNovelty]:
    """Per case, ``novelty`` with its histogram made from the *other* cases' healthy foreground (same ranges,
    normaliser and scale), at weight 1: how training scored the healthy validation cases it was fitted on, so a
    recalibration on the same cases reproduces its thresholds."""
    counts = [_counts(np.asarray(im, np.float32)[:, np.asarray(f, bool)], novelty.lows, novelty.highs, novelty.bins)
              for im, f in zip(images, foregrounds)]
    total = np.sum(counts, axis=0)
    return [replace(novelty, log_density=tuple(float(v) for v in _log_density(total - c).ravel()), weight=1.0)
            for c in counts]


def _log_density(counts: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(counts.astype(np.float64), SMOOTHING_BINS, mode="constant") + PSEUDO_COUNT
    return -np.log(smooth / smooth.sum())


def fit_intensity_novelty(images: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray],
                          healthy_maps: Sequence[np.ndarray], quantile: float
                          ) -> tuple[IntensityNovelty, list[IntensityNovelty]] | None:
    """Fit on the healthy validation ``images`` (c, z, y, x, preprocessed), their foregrounds (bool) and their
    postprocessing-ready healthy maps (z, y, x). Returns the novelty (weight 0) and, per case, the same fitted on the
    *other* cases with weight 1 (to score that case's healthy and anomalous versions without its own voxels),
    or None when the images have more than ``MAX_CHANNELS`` channels, fewer than two cases or no spread."""
    channels = int(np.asarray(images[0]).shape[0])
    if channels > MAX_CHANNELS or len(images) < 2 or not 0.0 < quantile < 1.0:
        return None
    values = [np.asarray(im, np.float32)[:, np.asarray(f, bool)] for im, f in zip(images, foregrounds)]
    pooled = np.concatenate(values, axis=1)
    if pooled.shape[1] == 0:
        return None
    lo, hi = pooled.min(1).astype(np.float64), pooled.max(1).astype(np.float64)
    if np.any(hi - lo <= 1e-6):
        return None
    bins = BINS_PER_CHANNEL[channels]
    lows, highs = tuple(lo - MARGIN * (hi - lo)), tuple(hi + MARGIN * (hi - lo))
    counts = [_counts(v, lows, highs, bins) for v in values]
    total = np.sum(counts, axis=0)
    loo_tables = [_log_density(total - c) for c in counts]
    healthy_novelty = np.concatenate([table[_bin_index(v[:, :, None, None], lows, highs, bins)].ravel()
                                      for v, table in zip(values, loo_tables)])
    normaliser = float(np.quantile(healthy_novelty, quantile))
    maps = np.concatenate([np.asarray(m)[np.asarray(f, bool)] for m, f in zip(healthy_maps, foregrounds)])
    scale = float(np.quantile(maps, quantile)) if maps.size else 0.0
    if not (normaliser > 0 and scale > 0):
        return None
    fitted = IntensityNovelty(tuple(float(v) for v in lows), tuple(float(v) for v in highs), bins,
                              tuple(float(v) for v in _log_density(total).ravel()), normaliser, scale, float(quantile))
    loo = [replace(fitted, log_density=tuple(float(v) for v in t.ravel()), weight=1.0) for t in loo_tables]
    return fitted, loo
