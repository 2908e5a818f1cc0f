"""Pooled voxel-wise average precision: the one definition used by validation, the postprocessing choice and
``uadnet_evaluate``."""

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
