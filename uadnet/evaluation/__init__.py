"""Evaluation of anomaly maps against ground-truth labels: metrics (pure functions) and the folder evaluator."""

from uadnet.evaluation.evaluator import EvaluationError, evaluate_folder
from uadnet.evaluation.metrics import (
    auroc,
    average_precision,
    best_dice,
    bootstrap_ci,
    case_level_metrics,
    case_metrics,
    dice_at_threshold,
    top_fraction_mean,
)

__all__ = [
    "EvaluationError",
    "auroc",
    "average_precision",
    "best_dice",
    "bootstrap_ci",
    "case_level_metrics",
    "case_metrics",
    "dice_at_threshold",
    "evaluate_folder",
    "top_fraction_mean",
]
