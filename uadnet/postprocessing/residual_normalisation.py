"""Residual normalisation: divide an anomaly map by what healthy tissue of the same kind scores.

A restorer's residual is larger on healthy tissue that is hard to restore (bright CSF, edges, vessels) than on
flat tissue, so a raw map flags anatomy as well as lesions, and a healthy case with much such tissue scores like a
diseased one. After training, the scores of the fold's *healthy* validation cases are binned by two local features
of every foreground voxel — the restored intensity (mean over channels, [0, 1] units) and the gradient magnitude of
the input (mean over channels, Gaussian derivative of σ voxels; in-plane only for 2D configurations) — in up to
``bins`` × ``bins`` quantile bins (fewer when there are few voxels); each bin keeps the ``quantile`` of its healthy
scores. A map is then divided by its voxels' bin value (interpolated between bin centres) plus a floor (a tenth of
the median healthy score), so 1 means "as high as the top ``1 - quantile`` of healthy tissue like this". Fitted by :func:`fit_residual_normalisation` on the preprocessed
grid; stored in ``postprocessing.json``; applied first by :func:`uadnet.postprocessing.apply_postprocessing`.
Measured on the development data in ``documentation/benchmarks.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

MIN_VOXELS_PER_BIN = 20  # a bin with fewer healthy voxels takes the largest bin value (conservative)
GRADIENT_SIGMA_VOXELS = 1.0


def residual_features(image: np.ndarray, restoration: np.ndarray, in_plane_only: bool,
                      sigma_voxels: float = GRADIENT_SIGMA_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """``(restored intensity, input gradient magnitude)``, each (z, y, x) float32, from ``image`` and
    ``restoration`` (c, z, y, x) in [0, 1]; derivatives along y, x only when ``in_plane_only`` (2D)."""
    x = np.asarray(image, np.float32).mean(0)
    intensity = np.asarray(restoration, np.float32).mean(0)
    axes = (1, 2) if in_plane_only else (0, 1, 2)
    sigma = [0.0 if (in_plane_only and a == 0) else sigma_voxels for a in range(3)]
    squared = np.zeros_like(x)
    for axis in axes:
        order = [1 if a == axis else 0 for a in range(3)]
        squared += ndimage.gaussian_filter(x, sigma, order=order, mode="nearest") ** 2
    return intensity, np.sqrt(squared)


def _fractional_index(values: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bin, upper bin and weight of the upper one for linear interpolation between bin centres (clamped)."""
    f = np.interp(values, centres, np.arange(centres.size, dtype=np.float64)) if centres.size > 1 else \
        np.zeros(np.shape(values))
    lower = np.floor(f).astype(np.intp)
    return lower, np.minimum(lower + 1, centres.size - 1), (f - lower).astype(np.float32)


@dataclass(frozen=True)
class ResidualNormalisation:
    """Quantile bins of the two features (``*_centres``: the median feature value of each bin, ascending), the
    per-bin healthy ``quantile`` table (intensity bin × gradient bin) and the floor, in score units. Between bin
    centres the table is interpolated bilinearly, so the normalised map changes smoothly with the restoration (a
    tiny numerical difference, e.g. of another backend, never jumps a voxel to another bin's value)."""

    intensity_centres: tuple[float, ...]
    gradient_centres: tuple[float, ...]
    table: tuple[tuple[float, ...], ...]
    floor: float
    quantile: float
    gradient_sigma_voxels: float = GRADIENT_SIGMA_VOXELS

    def __post_init__(self) -> None:
        shape = (len(self.intensity_centres), len(self.gradient_centres))
        if np.asarray(self.table, float).shape != shape or min(shape) < 1:
            raise ValueError(f"residual normalisation table must be {shape} (one value per pair of bin centres), "
                             f"got {np.asarray(self.table).shape}")
        if not self.floor > 0 or not np.all(np.isfinite(self.table)):
            raise ValueError("residual normalisation needs a positive floor and a finite table")
        for name in ("intensity_centres", "gradient_centres"):
            if np.any(np.diff(getattr(self, name)) < 0):
                raise ValueError(f"residual normalisation {name} must be ascending")

    def expected(self, intensity: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """The healthy table value at every voxel's features, interpolated bilinearly (same shape as them)."""
        table = np.asarray(self.table, np.float32)
        i0, i1, wi = _fractional_index(intensity, np.asarray(self.intensity_centres))
        g0, g1, wg = _fractional_index(gradient, np.asarray(self.gradient_centres))
        return ((1 - wi) * ((1 - wg) * table[i0, g0] + wg * table[i0, g1])
                + wi * ((1 - wg) * table[i1, g0] + wg * table[i1, g1])).astype(np.float32)

    def apply(self, score: np.ndarray, image: np.ndarray, restoration: np.ndarray, in_plane_only: bool
              ) -> np.ndarray:
        """``score / (expected + floor)`` for ``score`` (z, y, x) and ``image``/``restoration`` (c, z, y, x)."""
        return self.apply_features(score, residual_features(image, restoration, in_plane_only,
                                                            self.gradient_sigma_voxels))

    def apply_features(self, score: np.ndarray, features: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """As :meth:`apply`, with the case's :func:`residual_features` already computed."""
        return (np.asarray(score, np.float32) / (self.expected(*features) + np.float32(self.floor))
                ).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ResidualNormalisation:
        if "intensity_edges" in d:
            raise ValueError("its residual normalisation is in the bin-edge form of a development version before "
                             "0.1.0 (intensity_edges), which this uadnet does not apply")
        return cls(tuple(d["intensity_centres"]), tuple(d["gradient_centres"]), tuple(tuple(r) for r in d["table"]),
                   float(d["floor"]), float(d["quantile"]), float(d.get("gradient_sigma_voxels", GRADIENT_SIGMA_VOXELS)))


def _centres(values: np.ndarray, bins: np.ndarray, edges: np.ndarray) -> list[float]:
    """The median value of each bin, ascending (an empty bin takes its nearest inner edge)."""
    out = []
    for k in range(edges.size + 1):
        inside = values[bins == k]
        out.append(float(np.median(inside)) if inside.size else float(edges[min(k, edges.size - 1)]))
    return [float(v) for v in np.maximum.accumulate(out)]


def fit_residual_normalisation(scores: Sequence[np.ndarray], features: Sequence[tuple[np.ndarray, np.ndarray]],
                               foregrounds: Sequence[np.ndarray], quantile: float, bins: int = 12,
                               gradient_sigma_voxels: float = GRADIENT_SIGMA_VOXELS) -> ResidualNormalisation:
    """Fit on healthy maps ``scores`` (z, y, x), their :func:`residual_features` (computed with
    ``gradient_sigma_voxels``) and foregrounds (bool)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"residual normalisation quantile must be in (0, 1), got {quantile}")
    s = np.concatenate([np.asarray(m)[f] for m, f in zip(scores, foregrounds)]).astype(np.float64)
    i = np.concatenate([a[f] for (a, _), f in zip(features, foregrounds)])
    g = np.concatenate([b[f] for (_, b), f in zip(features, foregrounds)])
    if s.size < MIN_VOXELS_PER_BIN:
        raise ValueError(f"residual normalisation needs at least {MIN_VOXELS_PER_BIN} healthy foreground voxels, "
                         f"got {s.size}")
    bins = int(np.clip(np.sqrt(s.size / (4 * MIN_VOXELS_PER_BIN)), 1, bins))  # ~4x the minimum per bin on average
    inner = np.linspace(0, 1, bins + 1)[1:-1]
    i_edges, g_edges = np.unique(np.quantile(i, inner)), np.unique(np.quantile(g, inner))
    bi, bg = np.digitize(i, i_edges), np.digitize(g, g_edges)
    table = np.full((i_edges.size + 1, g_edges.size + 1), np.nan)
    flat = bi * table.shape[1] + bg
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(table.size + 1))
    for k in range(table.size):
        values = s[order[starts[k]:starts[k + 1]]]
        if values.size >= MIN_VOXELS_PER_BIN:
            table.flat[k] = np.quantile(values, quantile)
    table = np.where(np.isnan(table), np.nanmax(table) if np.isfinite(table).any() else np.quantile(s, quantile),
                     table)
    floor = max(0.1 * float(np.median(s)), 1e-6)
    return ResidualNormalisation(tuple(_centres(i, bi, i_edges)), tuple(_centres(g, bg, g_edges)),
                                 tuple(tuple(float(v) for v in row) for row in table), floor, float(quantile),
                                 float(gradient_sigma_voxels))
