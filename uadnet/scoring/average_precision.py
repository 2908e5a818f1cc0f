"""Pooled voxel-wise average precision: the one definition used by validation, the postprocessing choice and
``uadnet_evaluate``; and its mean over anomaly classes, the criterion of validation's choices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _distinct(sorted_values: np.ndarray) -> np.ndarray:
    return sorted_values[np.r_[True, sorted_values[1:] != sorted_values[:-1]]] if sorted_values.size else sorted_values


def ranking_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, tp, fp)`` at every distinct score ``t``, highest first: the positives and negatives with
    ``score >= t`` — the points of scikit-learn's precision-recall and ROC curves, from one sort of each class
    (no index sort: 10⁸ pooled voxels take seconds, not minutes). ``scores`` and ``labels`` flat, same size;
    non-finite scores are refused."""
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel().astype(bool, copy=False)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size} values) and labels ({y.size} values) differ in size")
    if not np.isfinite(s).all():
        raise ValueError("anomaly scores contain NaN or infinity: the map is broken, re-create it")
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    # two sorted runs: the stable sort (timsort) merges them in linear time
    thresholds = _distinct(np.sort(np.concatenate([_distinct(pos), _distinct(neg)]), kind="stable"))
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")  # ascending keys: numpy's fast path
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return thresholds[::-1], tp[::-1].astype(np.int64), fp[::-1].astype(np.int64)


def ap_of_curve(tp: np.ndarray, fp: np.ndarray) -> float | None:
    """Average precision Σ (Rₖ − Rₖ₋₁) Pₖ over the curve's points, highest threshold first (R₋₁ = 0): scikit-learn's
    ``average_precision_score``; ``None`` without positives."""
    if not tp.size or tp[-1] == 0:
        return None
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * (tp / (tp + fp))))


def pooled_ap(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float | None:
    """Average precision (area under the step-wise precision-recall curve) over all voxels of all cases, scores
    as float32; ``None`` without any positive voxel."""
    y = np.concatenate([np.asarray(lab).ravel().astype(bool, copy=False) for lab in labels])
    if not y.any():
        return None
    _, tp, fp = ranking_curve(np.concatenate([np.asarray(s, np.float32).ravel() for s in scores]), y)
    return ap_of_curve(tp, fp)


def class_aps(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[int, float]:
    """Per anomaly class present (label values ≥ 1; 0 is healthy; boolean labels: class 1), the pooled AP of that
    class's voxels against the healthy ones, the other classes' voxels left out."""
    y = np.concatenate([np.asarray(lab).ravel() for lab in labels]).astype(np.int64)
    s = np.concatenate([np.asarray(v, np.float32).ravel() for v in scores])
    out = {}
    for c in (int(c) for c in np.unique(y) if c != 0):
        keep = (y == 0) | (y == c)
        out[c] = ap_of_curve(*ranking_curve(s[keep], y[keep] == c)[1:])
    return out


def balanced(aps: dict) -> float | None:
    """Mean of per-class APs (:func:`class_aps`'s result); ``None`` for no class."""
    return float(np.mean(list(aps.values()))) if aps else None


def class_balanced_ap(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float | None:
    """Mean of :func:`class_aps`: each anomaly class counts as much however many voxels it has (validation's small
    anomalies as much as its large ones); with one class (or boolean labels) the pooled AP. ``None`` without any
    anomalous voxel."""
    return balanced(class_aps(scores, labels))
