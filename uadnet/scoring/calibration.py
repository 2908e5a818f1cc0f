"""Case scores and thresholds calibrated on healthy data (``calibration.json``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CALIBRATION_FILE = "calibration.json"  # in each fold folder
FALSE_POSITIVE_RATES = (0.001, 0.01, 0.05)
CASE_TOP_FRACTION = 0.01


def case_score(score: np.ndarray, foreground: np.ndarray | None = None, top_fraction: float = CASE_TOP_FRACTION
               ) -> float:
    """The case score, defined once (prediction, calibration, baselines and ``uadnet_evaluate`` use it): the mean of
    the ``ceil(top_fraction · n)`` highest of the ``n`` voxel scores (at least one), inside ``foreground`` if given
    and non-empty; float32 scores stay float32, float64 ones float64."""
    values = np.asarray(score)
    if values.dtype != np.float64:
        values = values.astype(np.float32, copy=False)
    if foreground is not None and np.any(foreground):
        values = values[np.asarray(foreground) != 0]
    values = values.ravel()
    n = max(1, math.ceil(top_fraction * values.size))
    return float(np.partition(values, values.size - n)[values.size - n:].mean())


def case_score_as_calibrated(calibration: dict) -> float:
    """The ``top_fraction`` a ``calibration.json`` computed its healthy case scores with (the case threshold is only
    meaningful for case scores computed the same way); ``ValueError`` for a reduction this version does not know."""
    spec = calibration.get("case_score", {"reduction": "mean_of_top_fraction", "top_fraction": CASE_TOP_FRACTION})
    if spec.get("reduction") != "mean_of_top_fraction":
        raise ValueError(f"calibration.json computes case scores as '{spec.get('reduction')}', which this uadnet "
                         "version does not know: update uadnet or recalibrate (uadnet_train ... --c)")
    return float(spec["top_fraction"])


def case_threshold(healthy_case_scores: Sequence[float], case_quantile: float) -> float:
    """The case threshold: the ``case_quantile`` quantile of healthy case scores (:func:`calibrate`)."""
    return float(np.quantile(healthy_case_scores, case_quantile))


def calibrate(scores: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray | None],
              false_positive_rates: Sequence[float] = FALSE_POSITIVE_RATES, case_quantile: float = 0.95,
              top_fraction: float = CASE_TOP_FRACTION) -> dict:
    """Thresholds from the score maps of healthy cases.

    Voxel threshold at false-positive rate r = the (1 − r) quantile of the pooled healthy foreground voxel scores
    (so a fraction r of healthy voxels lies above it). Case threshold = the ``case_quantile`` quantile of the
    healthy case scores (:func:`case_score`). Returned as a JSON-ready dict.
    """
    if not scores:
        raise ValueError("calibration needs at least one healthy case")
    pooled = np.concatenate([np.asarray(s, np.float32)[np.asarray(f) != 0] if f is not None and np.any(f)
                             else np.asarray(s, np.float32).ravel() for s, f in zip(scores, foregrounds)])
    cases = [case_score(s, f, top_fraction) for s, f in zip(scores, foregrounds)]
    return {
        "voxel_thresholds": {str(r): float(np.quantile(pooled, 1.0 - r)) for r in false_positive_rates},
        "case_threshold": case_threshold(cases, case_quantile),
        "case_threshold_quantile": case_quantile,
        "case_score": {"reduction": "mean_of_top_fraction", "top_fraction": top_fraction},
        "healthy_case_scores": {"mean": float(np.mean(cases)), "std": float(np.std(cases)), "values": cases},
        "num_cases": len(scores),
        "num_voxels": int(pooled.size),
    }
