"""Case scores and thresholds calibrated on healthy data (``calibration.json``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

CALIBRATION_FILE = "calibration.json"  # in each fold folder
FALSE_POSITIVE_RATES = (0.001, 0.01, 0.05)
CASE_TOP_FRACTION = 0.01
MEAN_OF_TOP = "mean_of_top_fraction"
TOP_OVER_MEDIAN = "mean_of_top_fraction_over_median"
TOP_FRACTIONS_VS_HEALTHY = "top_fractions_over_median_vs_healthy"
CASE_SCORE_REDUCTIONS = (MEAN_OF_TOP, TOP_OVER_MEDIAN, TOP_FRACTIONS_VS_HEALTHY)
MIN_HEALTHY_RATIO = 1e-6  # an all-zero healthy map (ratio 0) must not make every case infinitely abnormal
CASE_TOP_FRACTIONS = (0.01, 0.0001)  # TOP_FRACTIONS_VS_HEALTHY: a large change (1 %), a spot of a few voxels (0.01 %)


def case_score(score: np.ndarray, foreground: np.ndarray | None = None, top_fraction: float = CASE_TOP_FRACTION,
               reduction: str = MEAN_OF_TOP) -> float:
    """The case score, defined once (prediction, calibration, baselines and ``uadnet_evaluate`` use it), over the
    ``n`` voxel scores inside ``foreground`` (if given and non-empty; else all): ``mean_of_top_fraction`` the mean of
    the ``ceil(top_fraction · n)`` highest (at least one); ``mean_of_top_fraction_over_median`` that mean divided by
    the median score (by 1/1000 of that mean where the median is smaller; 0 for an all-zero map), so a case whose whole
    map runs higher (noise, contrast, a global intensity shift) does not score as a lesion does. Float32 scores stay
    float32, float64 ones float64."""
    if reduction not in (MEAN_OF_TOP, TOP_OVER_MEDIAN):
        known = [MEAN_OF_TOP, TOP_OVER_MEDIAN]
        raise ValueError(f"unknown case-score reduction '{reduction}'; choose from {known}"
                         + (f" ({TOP_FRACTIONS_VS_HEALTHY} is fitted on healthy maps: use CaseScore)"
                            if reduction == TOP_FRACTIONS_VS_HEALTHY else ""))
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
    case threshold is only meaningful for case scores computed the way it was calibrated.

    ``top_fractions_over_median_vs_healthy``: for each of ``top_fractions`` the mean of the top fraction over the
    median (:func:`case_score`, ``mean_of_top_fraction_over_median``) divided by the same ratio of a typical healthy
    case (``healthy_ratios``: the geometric mean over the healthy validation cases, fitted by :meth:`fitted`); the case
    score is the largest of these. A case is scored at whichever scale it stands out most against healthy cases — a
    large lesion by its top 1 %, a spot of a few voxels by its top 0.01 % — in "times a healthy case" (1 ≈ healthy),
    a positive ratio scale like the other reductions (``uadnet_ensemble`` rescales case scores by their thresholds)."""

    reduction: str = MEAN_OF_TOP
    top_fraction: float = CASE_TOP_FRACTION
    top_fractions: tuple[float, ...] = ()
    healthy_ratios: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.reduction not in CASE_SCORE_REDUCTIONS:
            raise ValueError(f"case scores computed as '{self.reduction}', which this uadnet version does not know: "
                             f"choose from {list(CASE_SCORE_REDUCTIONS)} (or update uadnet)")
        fractions = self.top_fractions if self.reduction == TOP_FRACTIONS_VS_HEALTHY else (self.top_fraction,)
        if self.reduction == TOP_FRACTIONS_VS_HEALTHY and not fractions:
            object.__setattr__(self, "top_fractions", fractions := CASE_TOP_FRACTIONS)
        if not all(0.0 < f <= 1.0 for f in fractions):
            raise ValueError(f"the case score's top_fraction must be in (0, 1], got {list(fractions)}")
        if self.healthy_ratios and (self.reduction != TOP_FRACTIONS_VS_HEALTHY
                                    or len(self.healthy_ratios) != len(fractions) or min(self.healthy_ratios) <= 0):
            raise ValueError(f"the case score's healthy ratios must be one positive value per top fraction of "
                             f"{TOP_FRACTIONS_VS_HEALTHY}, got {list(self.healthy_ratios)} for {list(fractions)}")

    @property
    def is_fitted(self) -> bool:
        return self.reduction != TOP_FRACTIONS_VS_HEALTHY or bool(self.healthy_ratios)

    @property
    def kind(self) -> tuple:
        """What defines the computation apart from the fitted healthy statistics (folds must agree on it)."""
        return self.reduction, self.top_fraction, self.top_fractions

    def _ratios(self, score: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
        return np.array([case_score(score, foreground, f, TOP_OVER_MEDIAN) for f in self.top_fractions])

    def fitted(self, healthy: Sequence[np.ndarray], foregrounds: Sequence[np.ndarray | None]) -> CaseScore:
        """This spec with its healthy ratios from the ``healthy`` maps (itself for the reductions without any): per top
        fraction the geometric mean of the healthy cases' ratios (each at least ``MIN_HEALTHY_RATIO``)."""
        if self.reduction != TOP_FRACTIONS_VS_HEALTHY:
            return self
        if not healthy:
            raise ValueError(f"{TOP_FRACTIONS_VS_HEALTHY} needs at least one healthy map to fit on")
        ratios = np.maximum([self._ratios(s, f) for s, f in zip(healthy, foregrounds)], MIN_HEALTHY_RATIO)
        return replace(self, healthy_ratios=tuple(float(v) for v in np.exp(np.log(ratios).mean(0))))

    @classmethod
    def mean_of(cls, specs: Sequence[CaseScore]) -> CaseScore:
        """One spec for the folds' mean map: their common computation, healthy ratios averaged (geometrically)."""
        if len({s.kind for s in specs}) != 1 or len({s.is_fitted for s in specs}) != 1:
            raise ValueError(f"the folds computed their case scores differently ({sorted(str(s.kind) for s in specs)})")
        if not specs[0].healthy_ratios:
            return specs[0]
        mean = np.exp(np.log([s.healthy_ratios for s in specs]).mean(0))
        return replace(specs[0], healthy_ratios=tuple(float(v) for v in mean))

    def __call__(self, score: np.ndarray, foreground: np.ndarray | None = None) -> float:
        if self.reduction != TOP_FRACTIONS_VS_HEALTHY:
            return case_score(score, foreground, self.top_fraction, self.reduction)
        if not self.is_fitted:
            raise ValueError(f"{TOP_FRACTIONS_VS_HEALTHY} compares with healthy cases: fit it first (CaseScore.fitted)")
        return float((self._ratios(score, foreground) / np.asarray(self.healthy_ratios)).max())

    def to_dict(self) -> dict:
        if self.reduction != TOP_FRACTIONS_VS_HEALTHY:
            return {"reduction": self.reduction, "top_fraction": self.top_fraction}
        return {"reduction": self.reduction, "top_fractions": list(self.top_fractions),
                "healthy_ratios": list(self.healthy_ratios)}


def case_score_as_calibrated(calibration: dict) -> CaseScore:
    """The case score a ``calibration.json`` computed its healthy case scores with (files without the key: the mean of
    the top 1 %); ``ValueError`` for a reduction this version does not know."""
    spec = calibration.get("case_score", {"reduction": MEAN_OF_TOP, "top_fraction": CASE_TOP_FRACTION})
    try:
        if spec.get("reduction") == TOP_FRACTIONS_VS_HEALTHY:
            fitted = CaseScore(TOP_FRACTIONS_VS_HEALTHY, top_fractions=tuple(float(f) for f in spec["top_fractions"]),
                               healthy_ratios=tuple(float(r) for r in spec["healthy_ratios"]))
            if not fitted.is_fitted:
                raise ValueError(f"{TOP_FRACTIONS_VS_HEALTHY} without its healthy ratios")
            return fitted
        return CaseScore(str(spec.get("reduction")), float(spec["top_fraction"]))
    except (ValueError, KeyError, TypeError) as e:
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
    healthy case scores computed as ``spec`` says (:class:`CaseScore`; one with healthy statistics not yet fitted is
    fitted on these ``scores`` first). Returned as a JSON-ready dict.
    """
    if not scores:
        raise ValueError("calibration needs at least one healthy case")
    pooled = np.concatenate([np.asarray(s, np.float32)[np.asarray(f) != 0] if f is not None and np.any(f)
                             else np.asarray(s, np.float32).ravel() for s, f in zip(scores, foregrounds)])
    if not spec.is_fitted:
        spec = spec.fitted(scores, foregrounds)
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
