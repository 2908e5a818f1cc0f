"""Anomaly-detection metrics: pure functions on numpy arrays.

Conventions: ``scores`` are anomaly scores (higher = more anomalous), ``labels`` are booleans (True = anomalous);
both are flattened, so any axis order works as long as the two arrays share it. A voxel is called anomalous at a
threshold ``t`` when ``score >= t``. A metric that is undefined on the given data (e.g. average precision without
any positive voxel) is returned as ``None``, never NaN, so results can go straight into JSON.

AP, AUROC and best Dice are exact (every voxel; every distinct score is a threshold) and come from one ranking
curve (:func:`uadnet.scoring.average_precision.ranking_curve`: one sort per class instead of scikit-learn's index
sort per metric; the definitions are scikit-learn's ``average_precision_score`` and ``roc_auc_score``, which the
tests compare against). Best Dice is the maximum of ``2TP / (2TP + FP + FN)`` over the curve's thresholds, the
exact optimum over all distinct thresholds. It is an oracle (the threshold is chosen on the test labels), reported
only for comparison with papers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from uadnet.scoring.average_precision import ap_of_curve, pooled_ap, ranking_curve
from uadnet.scoring.calibration import case_score

TOP_FRACTION = 0.01  # default case score: mean of the top 1 % voxels of the anomaly map


def _flat(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel().astype(bool, copy=False)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size} values) and labels ({y.size} values) differ in size")
    if s.size == 0:
        raise ValueError("no values to evaluate")
    return s, y


def pool(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the flattened maps of several cases into one float32 score and one bool label vector."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score arrays but {len(labels)} label arrays")
    s = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in scores])
    y = np.concatenate([np.asarray(a).ravel().astype(bool, copy=False) for a in labels])
    return s, y


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Average precision (area under the step-wise precision-recall curve); ``None`` without positives. Arrays or
    lists of per-case arrays (pooled): :func:`uadnet.scoring.average_precision.pooled_ap`."""
    if isinstance(scores, np.ndarray):
        scores, labels = [scores], [labels]
    return pooled_ap(scores, labels)


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """``ap``, ``auroc``, ``best_dice`` and ``best_dice_threshold`` from one ranking curve (see the module
    docstring); each ``None`` where undefined (AP and Dice without positives, AUROC without both classes). Ties of
    best Dice go to the lowest such threshold."""
    s, y = _flat(scores, labels)
    thresholds, tp, fp = ranking_curve(s, y)
    positives, negatives = int(tp[-1]), int(fp[-1])
    out: dict[str, float | None] = {"ap": ap_of_curve(tp, fp), "auroc": None, "best_dice": None,
                                    "best_dice_threshold": None}
    if positives and negatives:
        tpr, fpr = np.r_[0.0, tp / positives], np.r_[0.0, fp / negatives]
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)
    if positives:
        dice = 2 * tp / (tp + fp + positives)
        k = dice.size - 1 - int(np.argmax(dice[::-1]))  # the last maximum: the lowest threshold
        out["best_dice"], out["best_dice_threshold"] = float(dice[k]), float(thresholds[k])
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` unless both positives and negatives are present."""
    return ranking_metrics(scores, labels)["auroc"]


def best_dice(scores: np.ndarray, labels: np.ndarray) -> tuple[float | None, float | None]:
    """``(best Dice, threshold reaching it)`` over all distinct score thresholds (``score >= threshold``).

    ``(None, None)`` without positives. Ties go to the lowest such threshold.
    """
    m = ranking_metrics(scores, labels)
    return m["best_dice"], m["best_dice_threshold"]


def _threshold_in_dtype(threshold: float, dtype: np.dtype) -> Any:
    """The smallest value of the floating ``dtype`` that is >= ``threshold``, so that ``s >= result`` in that
    dtype equals the exact comparison ``s >= threshold`` (numpy would otherwise round a float64 threshold to the
    nearest float32, which may lie below it)."""
    t = dtype.type(threshold)
    if float(t) < threshold:
        t = np.nextafter(t, dtype.type(np.inf))
    return t


def at_or_above(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``scores >= threshold`` (same shape), compared exactly also for float16/float32 scores."""
    s = np.asarray(scores)
    if s.dtype.kind == "f" and s.dtype.itemsize < 8:
        threshold = _threshold_in_dtype(float(threshold), s.dtype)
    return s >= threshold


def confusion_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    """Voxel counts ``tp, fp, fn, tn`` when ``score >= threshold`` is called anomalous (compared exactly)."""
    s, y = _flat(scores, labels)
    pred = at_or_above(s, threshold)
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(y)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(s.size) - tp - fp - fn}


def dice_precision_recall(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Dice ``2TP/(2TP+FP+FN)``, precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)`` from counts.

    Dice and recall are ``None`` without positives (``TP + FN == 0``); precision is ``None`` when nothing is
    called anomalous (``TP + FP == 0``).
    """
    positives, called = tp + fn, tp + fp
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if positives else None,
        "precision": tp / called if called else None,
        "recall": tp / positives if positives else None,
    }


def dice_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float | None:
    """Dice of ``score >= threshold`` against the labels; ``None`` without positives."""
    c = confusion_at_threshold(scores, labels, threshold)
    return dice_precision_recall(c["tp"], c["fp"], c["fn"])["dice"]


def top_fraction_mean(scores: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the ``ceil(fraction * n)`` highest of the ``n`` scores (at least one): the default case score."""
    if np.asarray(scores).size == 0:
        raise ValueError("empty anomaly map")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return case_score(np.asarray(scores, np.float64), None, fraction)


def case_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Per-case voxel metrics: AP, AUROC, best Dice (+ its threshold) and, given a threshold, ``dice_``,
    ``precision_``, ``recall_at_threshold``, the fraction of normal voxels called anomalous
    (``fp_fraction_at_threshold``, defined for healthy cases too) and the counts ``tp``, ``fp``, ``fn``."""
    s, y = _flat(scores, labels)
    out: dict[str, Any] = {"num_voxels": int(s.size), "num_positive": int(np.count_nonzero(y)),
                           **ranking_metrics(s, y)}
    keys = ("dice", "precision", "recall", "fp_fraction")
    if threshold is None:
        out.update({f"{k}_at_threshold": None for k in keys})
        out.update({"tp": None, "fp": None, "fn": None})
    else:
        c = confusion_at_threshold(s, y, threshold)
        at = dice_precision_recall(c["tp"], c["fp"], c["fn"])
        negatives = c["fp"] + c["tn"]
        at["fp_fraction"] = c["fp"] / negatives if negatives else None
        out.update({f"{k}_at_threshold": at[k] for k in keys})
        out.update({k: c[k] for k in ("tp", "fp", "fn")})
    return out


def bootstrap_ci(values: Sequence[float | None], num_bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Any]:
    """Mean of per-case values with a percentile bootstrap confidence interval (cases resampled with replacement).

    ``None``/NaN values (undefined metrics) are left out first; ``n`` says how many cases remain. The interval
    bounds are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the ``num_bootstrap``
    resampled means, drawn from ``np.random.default_rng(seed)``; ``None`` when ``num_bootstrap`` is 0 or no
    value is defined.
    """
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    out: dict[str, Any] = {"mean": None, "ci_low": None, "ci_high": None, "n": int(v.size)}
    if v.size == 0:
        return out
    out["mean"] = float(v.mean())
    if num_bootstrap > 0:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, size=(num_bootstrap, v.size))].mean(axis=1)
        alpha = (1 - confidence) / 2
        low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
        out["ci_low"], out["ci_high"] = float(low), float(high)
    return out


def case_level_metrics(case_scores: Sequence[float], case_labels: Sequence[bool],
                       case_threshold: float | None = None,
                       flagged: Sequence[bool] | None = None) -> dict[str, Any]:
    """Detection of anomalous cases from one score per case (label: the case has any anomalous voxel).

    AUROC/AP need both healthy and anomalous cases (else ``None``). Sensitivity/specificity use
    ``score >= case_threshold`` when given, else the predictor's ``flagged`` decisions when given.
    """
    s = np.asarray(case_scores, dtype=np.float64)
    y = np.asarray(case_labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    both = n_pos > 0 and n_neg > 0
    out: dict[str, Any] = {
        "num_anomalous": n_pos,
        "num_healthy": n_neg,
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "ap": float(average_precision_score(y, s)) if both else None,
        "decision": None,
        "sensitivity": None,
        "specificity": None,
    }
    if case_threshold is not None:
        called, out["decision"] = s >= case_threshold, "score >= case_threshold"
    elif flagged is not None:
        called, out["decision"] = np.asarray(flagged, dtype=bool), "flagged column of scores.csv"
    else:
        return out
    out["sensitivity"] = float((called & y).sum() / n_pos) if n_pos else None
    out["specificity"] = float((~called & ~y).sum() / n_neg) if n_neg else None
    return out
