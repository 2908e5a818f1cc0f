"""The "many tasks" corruptions of the image-conditioned DDPM (Baugh et al., UNSURE 2024; Baugh et al. 2023).

Each anomaly is a randomly sheared, rotated and smoothly wobbled rectangle/ellipse (box/ellipsoid in 3D) whose
per-axis size follows ``clip((offset + Γ(shape, scale))·d, minimum·d, maximum·d)``, ``d`` = the foreground's
extent in voxels along that axis (the reference uses the image size; anatomy rarely fills a patch). A 2D sample's
singleton slice axis is skipped. A task then changes the image inside it:

- ``poisson_blend``: a rotated/rescaled patch of a foreign image, Poisson-blended with mixed gradients;
- ``sink`` / ``source``: radial deformation pulling content towards / pushing it away from a centre in the shape;
- ``fractal_intensity``: a smooth additive intensity change modulated by multi-octave (fractal) noise;
- ``foreign_patch``: plain interpolation ``(1-β)·x + β·patch`` with a foreign patch, β ~ U(0.05, 1).

Reference values (public code ``matt-baugh/many-tasks-make-light-work``, ``multitask_method/tasks``): size law
offset 0.03, Γ(2, 0.1), bounds 0.06/0.8 of the image size (``utils.nsa_sample_dimension``, ``base_task``); shear
N(0, 0.2) and rotation U(-π/2, π/2) per axis pair, shrunk back inside the upper bound (``task_shape``); source
patches rotated U(-π/4, π/4) and scaled by 1+Exp(0.1) or its inverse (``patch_blending_task``); radial factor
2^U(0.5, 2) with sampling distance ``R·(r/R)^f`` (source) or ``R - R·(1-r/R)^f`` (sink) (``deformation_task``);
smooth intensity change ramped in over a distance ``min(d)·(0.02 + Γ(3, 0.01))`` (``intensity_tasks``); up to 4
anomalies, after each one stopping with probability 1/2 (``base_task.apply``). Differences here: each anomaly
draws its own task (the reference uses one task per sample); the intensity amplitude is rescaled to [0, 1] images;
all randomness comes from the passed generator; changes are confined to the foreground.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from uadnet.corruption.base import Corrupted, unchanged
from uadnet.corruption.poisson import poisson_blend
from uadnet.corruption.shapes import mask_bbox
from uadnet.plans import SizeLaw

if TYPE_CHECKING:
    from uadnet.plans import Plans


# ----------------------------------------------------------------------------------------------------- shapes
def sample_sizes(rng: np.random.Generator, spatial_shape: Sequence[int], law: SizeLaw) -> np.ndarray:
    """Per-axis shape sizes in voxels, ``d`` = axis size: ``clip((offset + Γ(k, θ))·d, minimum·d, maximum·d)``
    (``law.distribution`` ``gamma``) or log-uniform in ``[minimum·d, maximum·d]`` (``log_uniform``)."""
    d = np.asarray(spatial_shape, float)
    if law.distribution == "log_uniform":
        return np.exp(rng.uniform(np.log(law.minimum * d), np.log(law.maximum * d)))
    if law.distribution != "gamma":
        raise ValueError(f"size law distribution '{law.distribution}' is not supported; use 'gamma' or 'log_uniform' "
                         "in uadnet_plans.json")
    raw = (law.offset + rng.gamma(law.gamma_shape, law.gamma_scale, size=d.size)) * d
    return np.clip(raw, law.minimum * d, law.maximum * d)


@dataclass
class Shape:
    """A deformed rectangle/ellipse: ``x = centre + matrix @ u`` maps aligned unit coordinates ``u`` to voxels.

    Inside means ``gauge(x) <= 1``: ``|u|_∞`` (rect) or ``|u|_2`` (ellipse) divided by ``1 + wobble(u/|u|)``, a
    smooth direction-dependent radius change of at most ``wobble_amplitude``.
    """

    centre: np.ndarray  # (D,) voxels
    matrix: np.ndarray  # (D, D) aligned unit coordinates -> voxel offsets (half sizes, shear, rotation)
    kind: str  # "rect" or "ellipse"
    wobble_amplitude: float = 0.0
    wobble_freq: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))  # (K, D)
    wobble_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,)

    def gauge(self, points: np.ndarray) -> np.ndarray:
        """``(D, N)`` voxel coordinates -> ``(N,)`` gauge; the shape is ``gauge <= 1``."""
        u = np.linalg.solve(self.matrix, points - self.centre[:, None])
        g = np.abs(u).max(axis=0) if self.kind == "rect" else np.sqrt((u * u).sum(axis=0))
        if self.wobble_amplitude > 0:
            direction = u / np.maximum(np.sqrt((u * u).sum(axis=0)), 1e-12)
            wobble = np.sin(self.wobble_freq @ direction + self.wobble_phase[:, None]).mean(axis=0)
            g = g / (1.0 + self.wobble_amplitude * wobble)
        return g

    def half_extent(self) -> np.ndarray:
        """Half the axis-aligned bounding-box size in voxels (an upper bound)."""
        return (1.0 + self.wobble_amplitude) * np.abs(self.matrix).sum(axis=1)

    def shifted(self, offset: np.ndarray) -> Shape:
        """The same shape in coordinates whose origin is at ``offset``."""
        return Shape(self.centre - offset, self.matrix, self.kind, self.wobble_amplitude, self.wobble_freq,
                     self.wobble_phase)


def plane_rotations(rng: np.random.Generator, ndim: int, max_angle: float) -> np.ndarray:
    """A rotation composed of one rotation by U(-max_angle, max_angle) (radians) per axis pair, in pair order."""
    rot = np.eye(ndim)
    for a, b in itertools.combinations(range(ndim), 2):
        t = rng.uniform(-max_angle, max_angle)
        r = np.eye(ndim)
        r[a, a] = r[b, b] = np.cos(t)
        r[a, b], r[b, a] = -np.sin(t), np.sin(t)
        rot = r @ rot
    return rot


def random_deformed_shape(rng: np.random.Generator, spatial_shape: Sequence[int], centre: np.ndarray,
                          law: SizeLaw | None = None, kind: str | None = None,
                          max_wobble: float = 0.3) -> Shape:
    """A rect/ellipse with the size law, shear N(0, 0.2), rotation U(-π/2, π/2) per axis pair and a smooth wobble.

    If shear and rotation push the bounding box beyond ``maximum·d`` the whole shape is scaled down to fit.
    """
    law = law or SizeLaw()
    ndim = len(spatial_shape)
    sizes = sample_sizes(rng, spatial_shape, law)
    transform = np.eye(ndim)
    for a in range(ndim):  # shear each axis against one other axis
        transform[a, rng.choice([b for b in range(ndim) if b != a])] = rng.normal(scale=0.2)
    transform = plane_rotations(rng, ndim, np.pi / 2) @ transform
    matrix = transform @ np.diag(sizes / 2)
    kind = kind or ("rect" if rng.random() < 0.5 else "ellipse")
    n_waves = 3
    shape = Shape(np.asarray(centre, float), matrix, kind, float(rng.uniform(0, max_wobble)),
                  rng.normal(scale=2.0, size=(n_waves, ndim)), rng.uniform(0, 2 * np.pi, n_waves))
    too_big = (2 * shape.half_extent() / (law.maximum * np.asarray(spatial_shape, float))).max()
    if too_big > 1:
        shape.matrix = shape.matrix / too_big
    return shape


# ------------------------------------------------------------------------------------------------------ tasks
FRACTAL_INTENSITY_SCALE = 0.05  # on [0, 1] images: the reference's 0.2 on z-scored ones


@dataclass
class Site:
    """Where one anomaly goes: a crop of the sample (bounding box plus a one-voxel ring, clipped to the image)."""

    offset: np.ndarray  # (D,) crop start in sample voxels
    shape: Shape  # in crop coordinates
    inside: np.ndarray  # (*crop) bool: the shape, within the image
    foreign: np.ndarray  # (c, *spatial) image to take patches from
    foreign_foreground: np.ndarray | None  # (*spatial) bool where patch centres may lie, or None (anywhere)
    sample_shape: tuple[int, ...]  # spatial size of the whole sample, voxels


Task = Callable[[np.ndarray, Site, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``(crop (c, *crop) float, site, rng) -> (new crop, soft mask (*crop) in [0, 1])``."""


def _random_voxel(rng: np.random.Generator, where: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    if where is not None and where.any():
        flat = np.flatnonzero(where)
        return np.array(np.unravel_index(flat[rng.integers(flat.size)], where.shape), float)
    return np.array([rng.integers(n) for n in shape], float)


def _channel_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = tuple(range(1, x.ndim))
    return x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)


def foreign_patch_for(crop_shape: Sequence[int], site: Site, rng: np.random.Generator) -> np.ndarray:
    """A ``(c, *crop_shape)`` patch of ``site.foreign``, rotated U(-π/4, π/4) per axis pair, scaled by 1+Exp(0.1)
    or its inverse, centred on a random foreground voxel (linear interpolation, reflected at the border)."""
    src = site.foreign
    ndim = src.ndim - 1
    rot = plane_rotations(rng, ndim, np.pi / 4)
    scale = 1 + rng.exponential(0.1)
    scale = scale if rng.random() < 0.5 else 1 / scale
    centre = _random_voxel(rng, site.foreign_foreground, src.shape[1:])
    grid = np.indices(crop_shape, float).reshape(ndim, -1)
    grid -= (np.asarray(crop_shape, float)[:, None] - 1) / 2
    coords = centre[:, None] + scale * rot @ grid
    patch = np.stack([ndimage.map_coordinates(ch, coords, order=1, mode="reflect") for ch in src])
    lo, hi = _channel_range(src)
    return np.clip(patch.reshape((src.shape[0], *crop_shape)), lo, hi)


def poisson_blend_task(crop: np.ndarray, site: Site, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-blend (mixed gradients) a foreign patch into the shape; clipped to [0, 1]."""
    patch = foreign_patch_for(crop.shape[1:], site, rng)
    out = np.clip(poisson_blend(crop, patch.astype(crop.dtype), site.inside, mixed=True), 0, 1)
    return out, site.inside.astype(np.float32)


def foreign_patch_task(crop: np.ndarray, site: Site, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Plain patch interpolation ``(1-β·m)·x + β·m·patch`` with β ~ U(0.05, 1)."""
    patch = foreign_patch_for(crop.shape[1:], site, rng)
    beta = rng.uniform(0.05, 1.0)
    m = site.inside.astype(crop.dtype)
    return crop * (1 - beta * m) + beta * m * patch, site.inside.astype(np.float32)


def edge_distance(gauge: Callable[[np.ndarray], np.ndarray], centre: np.ndarray, directions: np.ndarray,
                  max_distance: float, coarse_steps: int = 16, refine_steps: int = 12) -> np.ndarray:
    """Distance from ``centre`` along unit ``directions`` (D, N) to the first exit from ``gauge <= 1`` (voxels):
    a coarse march then bisection, vectorised over the rays."""
    t = np.linspace(0, max_distance, coarse_steps + 1)[1:]
    pts = centre[:, None, None] + directions[:, :, None] * t[None, None, :]
    outside = (gauge(pts.reshape(len(centre), -1)) > 1).reshape(directions.shape[1], coarse_steps)
    first = np.where(outside.any(axis=1), outside.argmax(axis=1), coarse_steps - 1)
    hi = t[first]
    lo = np.where(first > 0, t[np.maximum(first - 1, 0)], 0.0)
    for _ in range(refine_steps):
        mid = (lo + hi) / 2
        out = gauge(centre[:, None] + directions * mid) > 1
        hi, lo = np.where(out, mid, hi), np.where(out, lo, mid)
    return (lo + hi) / 2


def radial_deformation(crop: np.ndarray, inside: np.ndarray, centre: np.ndarray,
                       gauge: Callable[[np.ndarray], np.ndarray], factor: float, mode: str,
                       max_distance: float) -> np.ndarray:
    """Resample ``crop`` inside ``inside`` radially about ``centre`` (voxels, crop coordinates).

    A voxel at distance ``r`` from the centre, whose ray leaves the shape at ``R``, takes the value at distance
    ``R·(r/R)^f`` (``mode="source"``: content pushed outwards) or ``R - R·(1 - r/R)^f`` (``"sink"``: pulled
    inwards), ``f > 1``; the shape's edge and everything outside stay fixed. Cubic interpolation, clipped to the
    crop's channel range.
    """
    pts = np.array(np.nonzero(inside), float)
    if pts.size == 0:
        return crop.copy()
    vec = pts - centre[:, None]
    r = np.sqrt((vec * vec).sum(axis=0))
    dirs = vec / np.maximum(r, 1e-12)
    big_r = np.maximum(edge_distance(gauge, centre, dirs, max_distance), 1e-6)
    rho = np.clip(r / big_r, 0, 1)
    new_rho = rho ** factor if mode == "source" else 1 - (1 - rho) ** factor
    coords = centre[:, None] + dirs * (new_rho * big_r)
    out = crop.copy()
    lo, hi = _channel_range(crop)
    for ch in range(crop.shape[0]):
        vals = ndimage.map_coordinates(crop[ch], coords, order=3, mode="nearest")
        out[ch][inside] = np.clip(vals, lo[ch].ravel(), hi[ch].ravel())
    return out


def _radial_task(mode: str) -> Task:
    def task(crop: np.ndarray, site: Site, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ndim = crop.ndim - 1
        u = rng.normal(size=ndim)  # deformation centre: a random point in the inner half of the shape
        u *= 0.5 * rng.random() ** (1 / ndim) / max(np.linalg.norm(u), 1e-12)
        centre = site.shape.centre + site.shape.matrix @ u
        factor = 2 ** rng.uniform(0.5, 2.0)
        reach = 2 * float(np.linalg.norm(site.shape.half_extent())) + 1
        out = radial_deformation(crop, site.inside, centre, site.shape.gauge, factor, mode, reach)
        return out, site.inside.astype(np.float32)

    task.__name__ = f"{mode}_task"
    task.__doc__ = f"Radial {mode} deformation, factor 2^U(0.5, 2), centre in the inner half of the shape."
    return task


sink_task = _radial_task("sink")
source_task = _radial_task("source")


def fractal_noise(rng: np.random.Generator, shape: Sequence[int], octaves: int = 4, persistence: float = 0.5,
                  base_sigma: float | None = None) -> np.ndarray:
    """Zero-mean, unit-std multi-octave noise: Σ_k persistence^k · (white noise smoothed with σ = base/2^k)."""
    base = base_sigma if base_sigma is not None else max(shape) / 4
    out = np.zeros(shape)
    for k in range(octaves):
        layer = ndimage.gaussian_filter(rng.standard_normal(shape), max(base / 2 ** k, 0.5), mode="wrap")
        out += persistence ** k * layer / max(layer.std(), 1e-12)
    return (out - out.mean()) / max(out.std(), 1e-12)


def fractal_intensity_task(crop: np.ndarray, site: Site, rng: np.random.Generator,
                           intensity_scale: float = FRACTAL_INTENSITY_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Add ``±(scale/2 + Γ(3, scale))·ramp·clip(1 + 0.5·fractal, 0, 2)`` per channel; ``ramp`` rises from 0 at the
    shape's edge to 1 over ``min(d)·(0.02 + Γ(3, 0.01))`` voxels and is also the soft mask. ``intensity_scale``
    0.05 on [0, 1] images stands in for the reference's 0.2 on z-scored images."""
    inside = site.inside
    dist = ndimage.distance_transform_edt(np.pad(inside, 1))[(slice(1, -1),) * inside.ndim]
    if dist.max() <= 0:
        return crop.copy(), np.zeros(inside.shape, np.float32)
    smooth = min(min(site.sample_shape) * (0.02 + rng.gamma(3, 0.01)), dist.max())
    ramp = np.clip(dist / smooth, 0, 1)
    modulation = np.clip(1 + 0.5 * fractal_noise(rng, inside.shape), 0, 2)
    c = crop.shape[0]
    amplitude = (intensity_scale / 2 + rng.gamma(3, intensity_scale)) * rng.choice([-1.0, 1.0], size=c)
    change = amplitude.reshape((c,) + (1,) * inside.ndim) * (ramp * modulation)[None]
    return np.clip(crop + change.astype(crop.dtype), 0, 1), ramp.astype(np.float32)


TASKS: dict[str, Task] = {
    "poisson_blend": poisson_blend_task,
    "sink": sink_task,
    "source": source_task,
    "fractal_intensity": fractal_intensity_task,
    "foreign_patch": foreign_patch_task,
}


# -------------------------------------------------------------------------------------------------- the family
@dataclass
class ManyTasks:
    """The "many tasks" corruption family.

    With probability ``clean_fraction`` the sample is returned unchanged (severity 0). Otherwise 1 to
    ``max_anomalies`` anomalies are placed (after each, stop with probability 1/2, as in the reference), each
    centred on a random foreground voxel, with a task drawn uniformly from ``tasks``. Changes and mask are confined
    to the foreground; the mask is the voxel-wise maximum of the tasks' soft masks. ``size_mm`` ``[lo, hi]``
    replaces the relative ``size_law`` by sizes log-uniform in ``[lo, hi]`` mm per axis, and ``intensity_scale`` the
    fractal intensity task's amplitude scale (validation's small anomalies, which are conspicuous or invisible).

    Severity: the mask-weighted mean absolute intensity change (channel mean), ``Σ m·|x_c - x| / Σ m``, clipped to
    [0, 1] (intensities are in [0, 1], so this is the average depth of the anomaly; 0 iff nothing changed).
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    size_law: SizeLaw = field(default_factory=SizeLaw)
    max_anomalies: int = 4
    clean_fraction: float = 0.2
    size_mm: Sequence[float] | None = None
    intensity_scale: float = FRACTAL_INTENSITY_SCALE

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown or no many-tasks task(s) {unknown or self.tasks}; choose from {sorted(TASKS)}")
        if self.size_mm is not None and not (len(self.size_mm) == 2 and 0 < self.size_mm[0] <= self.size_mm[1]):
            raise ValueError(f"size_mm must be [lo, hi] with 0 < lo <= hi (mm), got {list(self.size_mm)}")

    @classmethod
    def from_plans(cls, plans: Plans, split: str = "train") -> ManyTasks:
        """Tasks of ``split``: ``"train"`` (``plans.methods.image_conditioned.train_tasks``) or ``"validation"``
        (``plans.validation.tasks``, held out from training)."""
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
        tasks = plans.methods.image_conditioned.train_tasks if split == "train" else plans.validation.tasks
        c = plans.corruption
        return cls(list(tasks), c.relative_size_law, c.max_anomalies, c.clean_fraction)

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        """Corrupt ``image`` (c, z, y, x) in [0, 1]; ``foreign`` (c, z', y', x') is another image of the dataset for
        the patch tasks (default: the image flipped along a random axis); ``spacing`` (z, y, x) mm is used only with
        ``size_mm`` (the relative law needs none)."""
        if rng.random() < self.clean_fraction or not foreground.any():
            return unchanged(image)
        two_d = image.shape[1] == 1
        spatial = (slice(None), 0) if two_d else (slice(None),)
        x = np.array(image[spatial], np.float32)  # (c, *spatial), a working copy
        fg = np.asarray(foreground, bool)[0] if two_d else np.asarray(foreground, bool)
        if foreign is None:
            axis = int(rng.integers(1, x.ndim))
            src, src_fg = np.flip(x, axis).copy(), np.flip(fg, axis - 1).copy()  # copies: x changes below
        else:
            src = np.asarray(foreign, np.float32)[spatial]
            src_fg = None if foreign_foreground is None else np.asarray(foreign_foreground, bool)[spatial[1:]]
        mask = np.zeros(fg.shape, np.float32)
        fg_flat = np.flatnonzero(fg)
        extent = [b.stop - b.start for b in mask_bbox(fg)]  # the size law's d: the foreground's extent per axis
        law = self.size_law
        if self.size_mm is not None:  # d = voxels per mm: sizes of [lo, hi] mm
            extent = [1.0 / float(v) for v in (list(spacing)[1:] if two_d else list(spacing))]
            law = SizeLaw(minimum=float(self.size_mm[0]), maximum=float(self.size_mm[1]), distribution="log_uniform")
        for _ in range(self.max_anomalies):
            centre = np.array(np.unravel_index(fg_flat[rng.integers(fg_flat.size)], fg.shape), float)
            shape = random_deformed_shape(rng, extent, centre, law)
            half = shape.half_extent()
            lo = np.maximum(np.floor(centre - half).astype(int) - 1, 0)
            hi = np.minimum(np.ceil(centre + half).astype(int) + 2, fg.shape)
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            local = shape.shifted(lo.astype(float))
            grid = np.indices(hi - lo, float).reshape(len(lo), -1)
            inside = (local.gauge(grid) <= 1).reshape(tuple(hi - lo))
            fg_box = fg[box]
            if (inside & fg_box).any():
                name = self.tasks[int(rng.integers(len(self.tasks)))]
                task = TASKS[name]
                if name == "fractal_intensity" and self.intensity_scale != FRACTAL_INTENSITY_SCALE:
                    task = functools.partial(fractal_intensity_task, intensity_scale=self.intensity_scale)
                crop = x[(slice(None), *box)]
                new, soft = task(crop, Site(lo.astype(float), local, inside, src, src_fg, fg.shape), rng)
                x[(slice(None), *box)] = np.where(fg_box, new, crop)
                mask[box] = np.maximum(mask[box], np.where(fg_box, soft, 0))
            if rng.random() < 0.5:
                break
        x = np.clip(x, 0, 1)
        out = x[:, None] if two_d else x
        mask = mask[None] if two_d else mask
        change = np.abs(out - image).mean(axis=0)
        weight = float(mask.sum())
        severity = float(np.clip((mask * change).sum() / weight, 0, 1)) if weight > 0 else 0.0
        if severity == 0.0:
            return unchanged(image)
        return Corrupted(out.astype(np.float32), mask.astype(np.float32), severity)
