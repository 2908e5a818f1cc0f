"""Anomaly-map postprocessing, applied on the preprocessed grid (spacing in mm, axes (z, y, x)).

Steps, in this order: residual normalisation (fitted on healthy validation maps, see
:mod:`uadnet.postprocessing.residual_normalisation`; needs the preprocessed image and the restoration); zero outside
the foreground; Gaussian smoothing (σ in mm, in-plane only for 2D
configurations) or its multi-scale form (the maximum over σ of the smoothed maps, each divided by its healthy
validation quantile: small spots keep their unsmoothed score, large changes gain from smoothing); median smoothing
(size in voxels, in-plane only for 2D); removal of connected components of
``score ≥ component_threshold`` smaller than ``min_component_mm3`` (their scores are set to 0); the
intensity-novelty term, on the foreground (:mod:`uadnet.postprocessing.intensity_novelty`; needs the preprocessed
image), last so that no smoothing erases the small spots it finds. Which steps are
used is decided greedily on validation maps with synthetic anomalies: each candidate is kept only if it raises
the validation average precision (:func:`decide_postprocessing`), and the result is stored as ``postprocessing.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage
from skimage.measure import label

from uadnet.postprocessing.intensity_novelty import IntensityNovelty
from uadnet.postprocessing.residual_normalisation import ResidualNormalisation
from uadnet.scoring.average_precision import balanced, class_aps

POSTPROCESSING_FILE = "postprocessing.json"  # in each fold folder
MIN_GAIN = 0.001  # absolute AP a step must add to be kept
NOVELTY_WEIGHTS = (1.0, 2.0, 4.0)  # intensity-novelty weights tried on validation, in turn, like any other step
MULTISCALE_FACTORS = (0.0, 1.0, 2.0, 4.0)  # σ of the multi-scale maximum, in voxels of the smallest spacing
MULTISCALE_QUANTILE = 0.99  # each scale divided by this quantile of its healthy validation foreground scores


@dataclass(frozen=True)
class Postprocessing:
    foreground_mask: bool = False
    gaussian_sigma_mm: float | None = None
    multiscale_sigmas_mm: list[float] | None = None  # the multi-scale maximum: σ (mm) of each scale, the first 0 …
    multiscale_divisors: list[float] | None = None  # … and each scale's healthy MULTISCALE_QUANTILE (score units)
    median_size_voxels: int | None = None
    min_component_mm3: float | None = None
    component_threshold: float | None = None
    residual_normalisation: ResidualNormalisation | None = None
    intensity_novelty: IntensityNovelty | None = None  # used when its weight > 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """:meth:`to_dict` with the intensity novelty summarised (no density table): for ``prediction.json``."""
        d = self.to_dict()
        if self.intensity_novelty is not None:
            d["intensity_novelty"] = self.intensity_novelty.summary()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Postprocessing:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown postprocessing key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        d = dict(d)
        if d.get("residual_normalisation") is not None:
            d["residual_normalisation"] = ResidualNormalisation.from_dict(d["residual_normalisation"])
        if d.get("intensity_novelty") is not None:
            d["intensity_novelty"] = IntensityNovelty.from_dict(d["intensity_novelty"])
        return cls(**d)


def apply_postprocessing(score: np.ndarray, foreground: np.ndarray | None, spacing: Sequence[float],
                         pp: Postprocessing, in_plane_only: bool = False, image: np.ndarray | None = None,
                         restoration: np.ndarray | None = None, novelty_unit: np.ndarray | None = None) -> np.ndarray:
    """Postprocess ``score`` (z, y, x) float32; ``spacing`` (z, y, x) mm; ``in_plane_only`` for 2D configurations
    (no smoothing across slices); ``image`` and ``restoration`` (c, z, y, x, preprocessed) are needed when ``pp``
    normalises the residual, ``image`` when it adds intensity novelty (or ``novelty_unit``, its term at weight 1,
    computed ahead). Returns a new array."""
    if pp.residual_normalisation is not None:
        if image is None or restoration is None:
            raise ValueError("this postprocessing normalises the residual: pass the preprocessed image and the "
                             "restoration to apply_postprocessing")
        out = pp.residual_normalisation.apply(score, image, restoration, in_plane_only)
    else:
        out = np.asarray(score, np.float32).copy()
    if pp.foreground_mask and foreground is not None:
        out[np.asarray(foreground) == 0] = 0.0
    if pp.gaussian_sigma_mm:
        out = _smooth(out, pp.gaussian_sigma_mm, spacing, in_plane_only)
    if pp.multiscale_sigmas_mm:
        out = multiscale_max(out, pp.multiscale_sigmas_mm, pp.multiscale_divisors or [], spacing, in_plane_only)
    if pp.median_size_voxels:
        size = [1 if (in_plane_only and a == 0) else pp.median_size_voxels for a in range(out.ndim)]
        out = ndimage.median_filter(out, size=size, mode="nearest")
    if pp.min_component_mm3 and pp.component_threshold is not None:
        components = label(out >= pp.component_threshold)
        sizes = np.bincount(components.ravel()) * float(np.prod(spacing))
        small = sizes < pp.min_component_mm3
        small[0] = False
        out[small[components]] = 0.0
    novelty = pp.intensity_novelty
    if novelty is not None and novelty.weight > 0:  # last: smoothing would erase the spots it is there to find
        if novelty_unit is not None:
            term = np.float32(novelty.weight) * np.asarray(novelty_unit, np.float32)
        elif image is None:
            raise ValueError("this postprocessing adds intensity novelty: pass the preprocessed image to "
                             "apply_postprocessing")
        else:
            term = novelty.term(image)
        out += term if foreground is None else np.where(np.asarray(foreground) != 0, term, np.float32(0))
    return out


def _smooth(score: np.ndarray, sigma_mm: float, spacing: Sequence[float], in_plane_only: bool) -> np.ndarray:
    """Gaussian smoothing with σ in mm (none across slices when ``in_plane_only``); σ 0 returns ``score``."""
    if not sigma_mm:
        return score
    sigma = [0.0 if (in_plane_only and a == 0) else sigma_mm / s for a, s in enumerate(spacing)]
    return ndimage.gaussian_filter(score, sigma, mode="nearest")


def multiscale_max(score: np.ndarray, sigmas_mm: Sequence[float], divisors: Sequence[float],
                   spacing: Sequence[float], in_plane_only: bool = False) -> np.ndarray:
    """``max_k(smooth(score, σ_k) / d_k) · d_0``: every scale on its healthy quantile's footing, in the units of the
    first scale (σ 0: the map itself). ``spacing`` (z, y, x) mm."""
    if len(sigmas_mm) != len(divisors) or not len(divisors) or min(divisors) <= 0:
        raise ValueError(f"multi-scale maximum: one positive divisor per σ needed, got σ {list(sigmas_mm)} and "
                         f"divisors {list(divisors)} (postprocessing.json)")
    score, out = np.asarray(score, np.float32), None
    for sigma, d in zip(sigmas_mm, divisors):
        scaled = _smooth(score, sigma, spacing, in_plane_only) / np.float32(d)
        out = scaled if out is None else np.maximum(out, scaled)
    return out * np.float32(divisors[0])


def fit_multiscale(healthy: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray],
                   spacings: Sequence[Sequence[float]], sigmas_mm: Sequence[float], in_plane_only: bool = False,
                   quantile: float = MULTISCALE_QUANTILE) -> list[float] | None:
    """Each scale's ``quantile`` of the healthy maps' foreground scores after smoothing with σ (mm); None when a
    scale has no positive quantile (nothing to divide by)."""
    divisors = []
    for sigma in sigmas_mm:
        values = np.concatenate([_smooth(np.asarray(h, np.float32), sigma, sp, in_plane_only)[np.asarray(f) != 0]
                                 for h, f, sp in zip(healthy, foregrounds, spacings)])
        d = float(np.quantile(values, quantile)) if values.size else 0.0
        if not d > 0:
            return None
        divisors.append(d)
    return divisors


def decide_postprocessing(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                          foregrounds: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
                          in_plane_only: bool = False,
                          component_threshold: float | None = None,
                          calibrate_threshold: Callable[[Postprocessing], float] | None = None,
                          novelty: IntensityNovelty | None = None,
                          novelty_units: Sequence[np.ndarray] | None = None,
                          healthy_scores: Sequence[np.ndarray] | None = None,
                          ) -> tuple[Postprocessing, list[dict]]:
    """Greedy choice on validation maps: start from nothing, try each candidate step and keep it if the AP rises by
    at least ``MIN_GAIN`` (pooled; with several anomaly classes in ``labels`` (values ≥ 1) the mean of their APs,
    :func:`uadnet.scoring.average_precision.class_balanced_ap`). ``spacings``: (z, y, x) mm per case. Component
    removal needs a threshold: ``component_threshold``, or ``calibrate_threshold(pp)`` (called with the steps chosen
    so far, e.g. the healthy 1 % FPR threshold). Each trial logs the balanced AP and each class's (keys: label values).
    With a fitted ``novelty`` and each case's term at weight 1 (``novelty_units``), the intensity-novelty weights
    ``NOVELTY_WEIGHTS`` are tried last (the term is added after the other steps). With ``healthy_scores`` (maps of
    the same cases without anomalies: same foregrounds and spacings), the multi-scale maximum (σ =
    ``MULTISCALE_FACTORS`` voxels, fitted on them) is tried after the Gaussians, in their place. Returns the choice
    and a log of every trial (JSON-ready)."""
    units = list(novelty_units) if novelty_units is not None else [None] * len(scores)

    def ap_of(pp: Postprocessing) -> tuple[float, dict[str, float]]:
        done = [apply_postprocessing(s, f, sp, pp, in_plane_only, novelty_unit=u)
                for s, f, sp, u in zip(scores, foregrounds, spacings, units)]
        per_class = {str(k): v for k, v in class_aps(done, labels).items()}
        return balanced(per_class) or 0.0, per_class

    pp = Postprocessing()
    best, per_class = ap_of(pp)
    trials = [{"step": "none", "ap": best, "ap_per_class": per_class, "kept": True}]

    def trial(name: str, candidate: Postprocessing) -> None:
        nonlocal pp, best
        ap, per_class = ap_of(candidate)
        kept = ap >= best + MIN_GAIN
        trials.append({"step": name, "ap": ap, "ap_per_class": per_class, "kept": kept})
        if kept:
            pp, best = candidate, ap

    trial("foreground_mask", replace(pp, foreground_mask=True))
    spacing = np.median(np.asarray(spacings, float), axis=0)
    min_spacing = float(min(spacing[1:] if in_plane_only else spacing))
    for factor in (1.0, 2.0):
        if pp.gaussian_sigma_mm is None:
            trial(f"gaussian_sigma_{factor:g}_voxel", replace(pp, gaussian_sigma_mm=factor * min_spacing))
    if healthy_scores is not None:
        base = replace(pp, gaussian_sigma_mm=None)
        sigmas = [f * min_spacing for f in MULTISCALE_FACTORS]
        divisors = fit_multiscale([apply_postprocessing(h, f, sp, base, in_plane_only)
                                   for h, f, sp in zip(healthy_scores, foregrounds, spacings)],
                                  foregrounds, spacings, sigmas, in_plane_only)
        if divisors is not None:
            trial("multiscale_max", replace(base, multiscale_sigmas_mm=sigmas, multiscale_divisors=divisors))
    trial("median_3", replace(pp, median_size_voxels=3))
    threshold = component_threshold
    if threshold is None and calibrate_threshold is not None:
        threshold = calibrate_threshold(pp)
    if threshold is not None:
        voxel_mm3 = float(np.prod(spacing))
        for voxels in (10, 50):
            if pp.min_component_mm3 is None:
                trial(f"remove_components_below_{voxels}_voxels",
                      replace(pp, min_component_mm3=voxels * voxel_mm3, component_threshold=float(threshold)))
    if novelty is not None and novelty_units is not None:  # last: tried first, it cost large lesions (benchmarks.md)
        for weight in NOVELTY_WEIGHTS:
            trial(f"intensity_novelty_{weight:g}", replace(pp, intensity_novelty=novelty.with_weight(weight)))
    return pp, trials
