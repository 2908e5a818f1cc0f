"""Pooled voxel-wise average precision: the one definition used by validation, the postprocessing choice and
``uadnet_evaluate``; and its mean over anomaly classes, the criterion of validation's choices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score


def pooled_ap(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float | None:
    """Average precision (area under the step-wise precision-recall curve) over all voxels of all cases, scores
    as float32; ``None`` without any positive voxel."""
    y = np.concatenate([np.asarray(lab).ravel().astype(bool, copy=False) for lab in labels])
    if not y.any():
        return None
    return float(average_precision_score(y, np.concatenate([np.asarray(s, np.float32).ravel() for s in scores])))


def class_aps(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[int, float]:
    """Per anomaly class present (label values ≥ 1; 0 is healthy; boolean labels: class 1), the pooled AP of that
    class's voxels against the healthy ones, the other classes' voxels left out."""
    y = np.concatenate([np.asarray(lab).ravel() for lab in labels]).astype(np.int64)
    s = np.concatenate([np.asarray(v, np.float32).ravel() for v in scores])
    out = {}
    for c in (int(c) for c in np.unique(y) if c != 0):
        keep = (y == 0) | (y == c)
        out[c] = float(average_precision_score(y[keep] == c, s[keep]))
    return out


def balanced(aps: dict) -> float | None:
    """Mean of per-class APs (:func:`class_aps`'s result); ``None`` for no class."""
    return float(np.mean(list(aps.values()))) if aps else None


def class_balanced_ap(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float | None:
    """Mean of :func:`class_aps`: each anomaly class counts as much however many voxels it has (validation's small
    anomalies as much as its large ones); with one class (or boolean labels) the pooled AP. ``None`` without any
    anomalous voxel."""
    return balanced(class_aps(scores, labels))
