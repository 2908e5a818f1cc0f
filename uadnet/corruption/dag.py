"""DAG, the DISYRE v2 corruption (``cold_ensemble``, the default): shape × texture × intensity bias.

1. shape: a soft mask m (``shapes.random_shape``; sizes in mm, edge σ in voxels);
2. texture: a foreign patch, min–max rescaled to the target's range inside the mask, blended with α_tex:
   ``x·(1 − α_tex·m) + fp·α_tex·m``;
3. intensity bias: quantise each channel to the plans' intensity codebook (nearest centroid, normalised [0, 1]
   intensities), select classes, blur the selection (σ in voxels) into b, add ``s·α_b·m·b`` with s = ±1;
then clip to [0, 1]. α_tex, α_b ~ U(severity_range); severity α = max(α_tex, α_b). ``bias_classes``
``subset`` (default): a uniform-size random non-empty subset of the clean image's classes inside the mask;
``reference`` (the public code's ``bias.py``): the texture-corrupted image is quantised, class q is picked with
probability n_q / (N + 1000) (n_q of its voxels among the N inside the mask; none picked → all), and α_b becomes
the largest change the bias actually made after clipping. ``max_shapes`` > 1 (plans:
``corruption.dag_max_shapes``) places 1 to ``max_shapes`` shapes (uniformly many), each with its own shape, sign and
classes and the same α_tex, α_b. ``small_shapes`` > 0 (plans: ``corruption.dag_small_shapes``) adds 0 to that many
further shapes of ``small_size_mm`` (full extent; edges softened by at most ``SMALL_EDGE_SIGMA_VOXELS``), treated
alike, so that the restorer also sees spots of a few voxels. Only each mask's bounding box (plus the blur margin) is
computed. The random draws do not depend on α, so one seed gives the same shapes, classes and signs at every
severity; with ``max_shapes`` 1 and ``small_shapes`` 0 no draw is made for either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from uadnet.corruption.base import Corrupted, severity_range_of, unchanged
from uadnet.corruption.fpi import foreign_image
from uadnet.corruption.shapes import SHAPE_TYPES, mask_bbox, random_shape

if TYPE_CHECKING:
    from uadnet.plans import Plans

DEFAULT_CODEBOOK = (0.1, 0.3, 0.5, 0.7, 0.9)  # used when the plans carry no codebook
SMALL_EDGE_SIGMA_VOXELS = (0.0, 1.0)  # edge blur of the small shapes: a 5-voxel blur would erase a 2-voxel spot


def quantise(values: np.ndarray, centroids: Sequence[float]) -> np.ndarray:
    """Index of the nearest centroid (``centroids`` sorted ascending) for every value; same shape, int64."""
    c = np.asarray(centroids, np.float64)
    return np.searchsorted((c[1:] + c[:-1]) / 2.0, values)


def texture(image: np.ndarray, foreign: np.ndarray, mask: np.ndarray, alpha_tex: float) -> np.ndarray:
    """Blend ``foreign`` (c, z, y, x), min–max rescaled per channel to ``image``'s range inside ``mask > 0``, into
    ``image``: ``x + α_tex·m·(fp − x)``. float32; exactly ``image`` where ``α_tex·m == 0``."""
    support = mask > 0
    if not support.any() or alpha_tex == 0:
        return image.astype(np.float32, copy=True)
    x_in, f_in = image[:, support], foreign[:, support]
    lo_x, hi_x = x_in.min(1), x_in.max(1)
    lo_f, hi_f = f_in.min(1), f_in.max(1)
    scale = (hi_x - lo_x) / np.maximum(hi_f - lo_f, 1e-6)
    fp = (foreign - lo_f[:, None, None, None]) * scale[:, None, None, None] + lo_x[:, None, None, None]
    w = np.float32(alpha_tex) * mask[None].astype(np.float32)
    return (image + w * (fp - image)).astype(np.float32)


def selection_map(channel: np.ndarray, centroids: Sequence[float], classes: Sequence[int],
                  sigma_voxels: float) -> np.ndarray:
    """The blurred indicator (z, y, x) float32 of voxels whose nearest centroid is in ``classes`` (σ in voxels,
    in-plane only for 2D)."""
    sel = np.isin(quantise(channel, centroids), np.asarray(classes)).astype(np.float32)
    if sigma_voxels > 0:
        sel = gaussian_filter(sel, (0.0 if channel.shape[0] == 1 else sigma_voxels, sigma_voxels, sigma_voxels),
                              mode="nearest")
    return sel


def intensity_bias(image: np.ndarray, mask: np.ndarray, codebook: Sequence[Sequence[float]],
                   classes: Sequence[Sequence[int]], alpha_b: float, sign: float, sigma_voxels: float = 1.0,
                   reference: np.ndarray | None = None) -> np.ndarray:
    """``x + s·α_b·m·b`` (unclipped, float32); b per channel = ``selection_map(r_c, codebook[c], classes[c])`` of
    ``reference`` (default: ``image``; DAG passes the clean image, so the classes are its tissue classes)."""
    out = image.astype(np.float32, copy=True)
    ref = image if reference is None else reference
    if alpha_b == 0 or not mask.any():
        return out
    for ch in range(image.shape[0]):
        b = selection_map(ref[ch], codebook[ch], classes[ch], sigma_voxels)
        out[ch] += np.float32(sign * alpha_b) * mask * b
    return out


@dataclass
class DAG:
    """DISYRE v2 corruption. ``codebook``: per-channel sorted centroids in [0, 1] (one list is shared by all
    channels; empty → ``DEFAULT_CODEBOOK``). Sizes in mm, σ in voxels."""

    size_mm: Sequence[float] = (10.0, 44.0)
    shape_types: Sequence[str] = SHAPE_TYPES
    edge_sigma_voxels: Sequence[float] = (0.0, 5.0)
    edge_probability: float = 0.7
    codebook: Sequence[Sequence[float]] = field(default_factory=list)
    severity_range: Sequence[float] = (0.0, 1.0)
    bias_blur_sigma_voxels: float = 1.0
    size_distribution: str = "uniform"
    bias_classes: str = "subset"
    max_shapes: int = 1
    small_shapes: int = 0
    small_size_mm: Sequence[float] = (2.0, 8.0)

    def __post_init__(self) -> None:
        if self.bias_classes not in ("subset", "reference"):
            raise ValueError(f"corruption.bias_classes '{self.bias_classes}' is not supported; use 'subset' or "
                             "'reference' in uadnet_plans.json")
        if int(self.max_shapes) < 1:
            raise ValueError(f"corruption.dag_max_shapes must be >= 1, got {self.max_shapes}: fix uadnet_plans.json")
        if int(self.small_shapes) < 0:
            raise ValueError(f"corruption.dag_small_shapes must be >= 0, got {self.small_shapes}: fix "
                             "uadnet_plans.json")
        if not 0 < self.small_size_mm[0] <= self.small_size_mm[1]:
            raise ValueError(f"corruption.small_shape_size_mm must be [min, max] with 0 < min <= max, got "
                             f"{list(self.small_size_mm)}: fix uadnet_plans.json")

    @classmethod
    def from_plans(cls, plans: Plans) -> DAG:
        cp = plans.corruption
        return cls(tuple(cp.shape_size_mm), tuple(cp.shape_types), tuple(cp.edge_sigma_voxels),
                   cp.edge_smoothing_probability, [list(c) for c in cp.intensity_codebook],
                   severity_range_of(cp), cp.bias_blur_sigma_voxels, cp.size_distribution, cp.bias_classes,
                   cp.dag_max_shapes, cp.dag_small_shapes, tuple(cp.small_shape_size_mm))

    def channel_codebooks(self, num_channels: int) -> list[list[float]]:
        books = [sorted(c) for c in self.codebook if len(c)] or [list(DEFAULT_CODEBOOK)]
        if len(books) == 1:
            return books * num_channels
        if len(books) != num_channels:
            raise ValueError(f"intensity codebook has {len(books)} channels, the image {num_channels}")
        return books

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float], *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        mask = self._shape(image, foreground, rng, spacing)
        a_tex, a_b = (float(a) for a in rng.uniform(*self.severity_range, size=2))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        fp = foreign_image(image, rng, foreign)
        if max(a_tex, a_b) == 0.0:
            return unchanged(image)
        first = self._one(image, mask, fp, rng, a_tex, a_b, sign)
        if first is None:
            return unchanged(image)
        result, applied_b = first
        masks = [mask]
        extra = int(rng.integers(0, self.max_shapes)) if self.max_shapes > 1 else 0
        small = int(rng.integers(0, self.small_shapes + 1)) if self.small_shapes > 0 else 0
        for i in range(extra + small):  # further shapes: their own shape, sign and classes, the same severities
            mask = self._shape(image, foreground, rng, spacing, small=i >= extra)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            more = self._one(result, mask, fp, rng, a_tex, a_b, sign)
            if more is not None:
                result, b = more
                applied_b = max(applied_b, b)
                masks.append(mask)
        return Corrupted(result, np.maximum.reduce(masks), max(a_tex, applied_b))

    def _shape(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
               spacing: Sequence[float], small: bool = False) -> np.ndarray:
        if small:
            edges = (min(SMALL_EDGE_SIGMA_VOXELS[0], self.edge_sigma_voxels[0]),
                     min(SMALL_EDGE_SIGMA_VOXELS[1], self.edge_sigma_voxels[1]))
            return random_shape(image.shape[1:], foreground, rng, spacing, self.small_size_mm, self.shape_types,
                                edges, self.edge_probability)
        return random_shape(image.shape[1:], foreground, rng, spacing, self.size_mm, self.shape_types,
                            self.edge_sigma_voxels, self.edge_probability, size_distribution=self.size_distribution)

    def _one(self, image: np.ndarray, mask: np.ndarray, fp: np.ndarray, rng: np.random.Generator, a_tex: float,
             a_b: float, sign: float) -> tuple[np.ndarray, float] | None:
        """Texture and bias inside one shape ``mask``: ``(corrupted copy of image, the bias severity applied)``, or
        None for an empty mask."""
        margin = int(np.ceil(3 * self.bias_blur_sigma_voxels)) + 1
        box = mask_bbox(mask, margin)
        if box is None:
            return None
        crop = (slice(None),) + box
        m, x = mask[box], image[crop]
        books = self.channel_codebooks(image.shape[0])
        textured = texture(x, fp[crop], m, a_tex)
        reference = self.bias_classes == "reference"
        quantised_from = textured if reference else x
        classes = []
        for ch, book in enumerate(books):
            labels = quantise(quantised_from[ch][m > 0], book)
            present, counts = np.unique(labels, return_counts=True)
            if reference:  # class q with probability n_q / (N + 1000); none picked: all classes (bias.py)
                picked = present[rng.random(present.size) < counts / (labels.size + 1000.0)]
                classes.append(picked if picked.size else present)
            else:  # a random non-empty subset of the clean image's classes inside the mask
                classes.append(rng.choice(present, rng.integers(1, present.size + 1), replace=False))
        out = np.clip(intensity_bias(textured, m, books, classes, a_b, sign, self.bias_blur_sigma_voxels,
                                     reference=quantised_from), 0.0, 1.0)
        if reference:  # condition on the bias actually applied (after clipping), as the reference does
            a_b = float(np.abs(out - np.clip(textured, 0.0, 1.0)).max()) if a_b > 0 else 0.0
        result = image.astype(np.float32, copy=True)
        result[crop] = out
        return result, a_b
