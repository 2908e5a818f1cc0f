"""Lesion-wise detection by lesion size, and voxel AP per group of cases (lesion kind).

Arrays are ``(z, y, x)``, spacings are in mm in ``(z, y, x)`` order. A *lesion* is a connected component of the
label's anomalous voxels (full connectivity: 26 neighbours in 3D; 8 in a single-slice image, ``z == 1``). Its size
is its volume in mm³ (voxels × ``prod(spacing)``), for a single-slice image its in-plane area in mm²
(pixels × ``spacing_y × spacing_x``; natural images have spacing 1, so mm means pixels there). Its *equivalent
diameter* is that of the ball of the same volume, ``(6 V / π)^(1/3)``, or of the disc of the same area,
``sqrt(4 A / π)``. A lesion is *detected* at the voxel threshold ``t`` when any of its voxels has
``score >= t`` (compared exactly, as everywhere in ``metrics``). A *false-positive component* is a connected
component of ``score >= t`` (same connectivity) that touches no label voxel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from uadnet.evaluation import metrics

SIZE_BINS_MM: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, math.inf)  # edges of the equivalent-diameter bins, mm
UNLISTED_GROUP = "unlisted"  # group of the cases that the groups file does not name


@dataclass
class CaseLesions:
    """The lesion-wise record of one case (a few numbers per lesion; the volumes are not kept)."""

    diameters_mm: np.ndarray  # (n,) equivalent diameter of each lesion, mm
    max_scores: np.ndarray  # (n,) highest score inside each lesion
    detected: np.ndarray | None  # (n,) bool: max score >= threshold; None without a threshold
    fp_components: int | None  # components of score >= threshold touching no label voxel; None without threshold

    @property
    def healthy(self) -> bool:
        """The label has no anomalous voxel."""
        return self.diameters_mm.size == 0

    def row(self) -> dict[str, int | None]:
        """The per-case columns ``lesions``, ``lesions_detected``, ``fp_components``."""
        return {"lesions": int(self.diameters_mm.size),
                "lesions_detected": None if self.detected is None else int(np.count_nonzero(self.detected)),
                "fp_components": self.fp_components}


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a ``(z, y, x)`` bool mask with full connectivity (8 in 2D when ``z == 1``)."""
    if mask.shape[0] == 1:
        comp, n = ndimage.label(mask[0], structure=np.ones((3, 3), bool))
        return comp[None], int(n)
    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    return comp, int(n)


def equivalent_diameter_mm(num_voxels: np.ndarray, spacing_zyx: Sequence[float], single_slice: bool) -> np.ndarray:
    """Equivalent diameter (mm) of lesions of ``num_voxels`` voxels: of the ball of the same volume (mm³), or for
    a single-slice image of the disc of the same in-plane area (mm², the slice spacing is ignored)."""
    n = np.asarray(num_voxels, dtype=np.float64)
    if single_slice:
        return np.sqrt(4 * n * float(spacing_zyx[1]) * float(spacing_zyx[2]) / math.pi)
    return np.cbrt(6 * n * float(np.prod(np.asarray(spacing_zyx, dtype=np.float64))) / math.pi)


def case_lesions(scores: np.ndarray, labels: np.ndarray, spacing_zyx: Sequence[float],
                 threshold: float | None) -> CaseLesions:
    """The lesions of one case: ``scores`` and bool ``labels`` are ``(z, y, x)`` arrays on the same grid,
    ``spacing_zyx`` in mm; ``threshold`` is the voxel threshold (``None``: no detection / false positives)."""
    if scores.shape != labels.shape or scores.ndim != 3:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be (z, y, x) arrays of one shape")
    lesions, n = _components(labels)
    index = np.arange(1, n + 1)
    sizes = np.bincount(lesions.ravel(), minlength=n + 1)[1:]
    diameters = equivalent_diameter_mm(sizes, spacing_zyx, labels.shape[0] == 1)
    max_scores = np.asarray(ndimage.maximum(scores, lesions, index), dtype=scores.dtype).reshape(n)
    if threshold is None:
        return CaseLesions(diameters, max_scores, None, None)
    called = metrics.at_or_above(scores, threshold)
    detected = np.bincount(lesions[called], minlength=n + 1)[1:] > 0
    del lesions
    blobs, m = _components(called)
    touching = np.unique(blobs[called & labels])
    fp = m - int(np.count_nonzero(touching))
    return CaseLesions(diameters, max_scores, detected, fp)


def _bin_name(low: float, high: float) -> str:
    if low == 0:
        return f"<{high:g} mm"
    return f">={low:g} mm" if math.isinf(high) else f"{low:g}-{high:g} mm"


def _bin_stats(diameters: np.ndarray, max_scores: np.ndarray, detected: np.ndarray | None) -> dict[str, Any]:
    n = int(diameters.size)
    k = None if detected is None else int(np.count_nonzero(detected))
    return {"lesions": n, "detected": k, "detection_rate": k / n if k is not None and n else None,
            "median_max_score": float(np.median(max_scores)) if n else None}


def summarize(records: Sequence[CaseLesions], threshold: float | None) -> dict[str, Any]:
    """Lesion counts, detections and median lesion max score per size bin (``SIZE_BINS_MM``) and over all
    lesions, plus false-positive components in total and in healthy cases. Detection fields are ``None``
    without a threshold; ``high_mm`` of the last bin is ``inf`` (``null`` in JSON)."""
    d = np.concatenate([r.diameters_mm for r in records] or [np.zeros(0)])
    m = np.concatenate([r.max_scores.astype(np.float64) for r in records] or [np.zeros(0)])
    det = None if threshold is None else np.concatenate([r.detected for r in records] or [np.zeros(0, bool)])
    bins = []
    for low, high in itertools.pairwise(SIZE_BINS_MM):
        inside = (d >= low) & (d < high)
        bins.append({"bin": _bin_name(low, high), "low_mm": low, "high_mm": high,
                     **_bin_stats(d[inside], m[inside], None if det is None else det[inside])})
    healthy = [r for r in records if r.healthy]
    return {
        "threshold": threshold,
        "size_bins_mm": [e for e in SIZE_BINS_MM if math.isfinite(e)],
        "bins": bins,
        "all": {"bin": "all", "low_mm": 0.0, "high_mm": math.inf, **_bin_stats(d, m, det)},
        "false_positive_components": None if threshold is None else sum(r.fp_components for r in records),
        "false_positive_components_in_healthy_cases":
            None if threshold is None else sum(r.fp_components for r in healthy),
        "num_healthy_cases": len(healthy),
    }


def group_summaries(case_groups: Sequence[str], records: Sequence[CaseLesions], scores: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray], threshold: float | None,
                    case_scores: Sequence[float] | None = None) -> dict[str, dict[str, Any]]:
    """Per group (``case_groups[i]`` is the group of case ``i``): pooled voxel AP and AUROC over the group's cases
    *plus all healthy cases* (so false positives on healthy cases count against every group), the lesion-wise
    summary of the group's own cases and, with ``case_scores`` (one per case), the case-level AUROC of the group's
    anomalous cases against all healthy ones (``case_auroc``; None without both). ``scores``/``labels`` are the
    flattened per-case arrays."""
    healthy = {i for i, r in enumerate(records) if r.healthy}
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(set(case_groups)):
        members = [i for i, g in enumerate(case_groups) if g == group]
        pooled = sorted(set(members) | healthy)
        s, y = metrics.pool([scores[i] for i in pooled], [labels[i] for i in pooled])
        ranked = metrics.ranking_metrics(s, y)
        case_auroc = None
        if case_scores is not None:
            case_auroc = metrics.case_level_metrics([case_scores[i] for i in pooled],
                                                    [i not in healthy for i in pooled])["auroc"]
        out[group] = {"num_cases": len(members),
                      "num_anomalous_cases": sum(1 for i in members if i not in healthy),
                      "num_healthy_cases_added": len(healthy.difference(members)),
                      "num_voxels": int(s.size), "num_positive": int(np.count_nonzero(y)),
                      "ap": ranked["ap"], "auroc": ranked["auroc"], "case_auroc": case_auroc,
                      "lesion_wise": summarize([records[i] for i in members], threshold)}
        del s, y
    return out
