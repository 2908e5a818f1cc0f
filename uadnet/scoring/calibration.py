"""Case scores and thresholds calibrated on healthy data (``calibration.json``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CALIBRATION_FILE = "calibration.json"  # in each fold folder
FALSE_POSITIVE_RATES = (0.001, 0.01, 0.05)
CASE_TOP_FRACTION = 0.01
MEAN_OF_TOP = "mean_of_top_fraction"
TOP_OVER_MEDIAN = "mean_of_top_fraction_over_median"
CASE_SCORE_REDUCTIONS = (MEAN_OF_TOP, TOP_OVER_MEDIAN)


def case_score(score: np.ndarray, foreground: np.ndarray | None = None, top_fraction: float = CASE_TOP_FRACTION,
               reduction: str = MEAN_OF_TOP) -> float:
    """The case score, defined once (prediction, calibration, baselines and ``uadnet_evaluate`` use it), over the
    ``n`` voxel scores inside ``foreground`` (if given and non-empty; else all): ``mean_of_top_fraction`` the mean of
    the ``ceil(top_fraction · n)`` highest (at least one); ``mean_of_top_fraction_over_median`` that mean divided by
    the median score (by 1/1000 of that mean where the median is smaller; 0 for an all-zero map), so a case whose whole
    map runs higher (noise, contrast, a global intensity shift) does not score as a lesion does. Float32 scores stay
    float32, float64 ones float64."""
    if reduction not in CASE_SCORE_REDUCTIONS:
        raise ValueError(f"unknown case-score reduction '{reduction}'; choose from {list(CASE_SCORE_REDUCTIONS)}")
    values = np.asarray(score)
    if values.dtype != np.float64:
        values = values.astype(np.float32, copy=False)
    if foreground is not None and np.any(foreground):
        values = values[np.asarray(foreground) != 0]
    values = values.ravel()
    n = max(1, math.ceil(top_fraction * values.size))
    top = float(np.partition(values, values.size - n)[values.size - n:].mean())
    if reduction == MEAN_OF_TOP:
        return top
    denominator = max(float(np.median(values)), 1e-3 * abs(top))
    return top / denominator if denominator > 0 else 0.0


@dataclass(frozen=True)
class CaseScore:
    """How case scores are computed (:func:`case_score`); stored as ``case_score`` in ``calibration.json``, because a
    case threshold is only meaningful for case scores computed the way it was calibrated."""

    reduction: str = MEAN_OF_TOP
    top_fraction: float = CASE_TOP_FRACTION

    def __post_init__(self) -> None:
        if self.reduction not in CASE_SCORE_REDUCTIONS:
            raise ValueError(f"case scores computed as '{self.reduction}', which this uadnet version does not know: "
                             f"choose from {list(CASE_SCORE_REDUCTIONS)} (or update uadnet)")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"the case score's top_fraction must be in (0, 1], got {self.top_fraction}")

    def __call__(self, score: np.ndarray, foreground: np.ndarray | None = None) -> float:
        return case_score(score, foreground, self.top_fraction, self.reduction)

    def to_dict(self) -> dict:
        return {"reduction": self.reduction, "top_fraction": self.top_fraction}


def case_score_as_calibrated(calibration: dict) -> CaseScore:
    """The case score a ``calibration.json`` computed its healthy case scores with (files without the key: the mean of
    the top 1 %); ``ValueError`` for a reduction this version does not know."""
    spec = calibration.get("case_score", {"reduction": MEAN_OF_TOP, "top_fraction": CASE_TOP_FRACTION})
    try:
        return CaseScore(str(spec.get("reduction")), float(spec["top_fraction"]))
    except ValueError as e:
        raise ValueError(f"calibration.json: {e}; or recalibrate (uadnet_train ... --c)") from None


def case_threshold(healthy_case_scores: Sequence[float], case_quantile: float) -> float:
    """The case threshold: the ``case_quantile`` quantile of healthy case scores (:func:`calibrate`)."""
    return float(np.quantile(healthy_case_scores, case_quantile))


def calibrate(scores: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray | None],
              false_positive_rates: Sequence[float] = FALSE_POSITIVE_RATES, case_quantile: float = 0.95,
              spec: CaseScore = CaseScore()) -> dict:
    """Thresholds from the score maps of healthy cases.

    Voxel threshold at false-positive rate r = the (1 − r) quantile of the pooled healthy foreground voxel scores
    (so a fraction r of healthy voxels lies above it). Case threshold = the ``case_quantile`` quantile of the
    healthy case scores computed as ``spec`` says (:class:`CaseScore`). Returned as a JSON-ready dict.
    """
    if not scores:
        raise ValueError("calibration needs at least one healthy case")
    pooled = np.concatenate([np.asarray(s, np.float32)[np.asarray(f) != 0] if f is not None and np.any(f)
                             else np.asarray(s, np.float32).ravel() for s, f in zip(scores, foregrounds)])
    cases = [spec(s, f) for s, f in zip(scores, foregrounds)]
    return {
        "voxel_thresholds": {str(r): float(np.quantile(pooled, 1.0 - r)) for r in false_positive_rates},
        "case_threshold": case_threshold(cases, case_quantile),
        "case_threshold_quantile": case_quantile,
        "case_score": spec.to_dict(),
        "healthy_case_scores": {"mean": float(np.mean(cases)), "std": float(np.std(cases)), "values": cases},
        "num_cases": len(scores),
        "num_voxels": int(pooled.size),
    }
