"""Anomaly maps of a trained fold on its validation cases, as ``uadnet_predict`` makes them: sliding window, then
the fold's residual normalisation and postprocessing, on the preprocessed grid. Shared by
``uadnet_find_best_configuration`` (healthy and anomalous maps) and ``uadnet_ensemble --recalibrate`` (healthy
maps), so both score exactly what prediction thresholds.

The validation cases are the fold's ``val`` cases of ``UADNET_PREPROCESSED/<dataset>/splits_final.json``, up to
``validation.max_cases`` of them, made by :func:`uadnet.training.validation.make_validation_set`, as in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uadnet import paths
from uadnet.inference.model_loading import TrainedFold
from uadnet.inference.predictor import Predictor
from uadnet.plans import SPLITS_FILE, Plans
from uadnet.postprocessing.intensity_novelty import IntensityNovelty, leave_one_out
from uadnet.training.validation import ValidationCase, make_validation_set
from uadnet.utilities.file_io import load_json


class ValidationMapsError(ValueError):
    """The fold's validation cases cannot be made; the message names the file and the fix."""


def validation_ids(dataset: str, fold: str) -> list[str]:
    """The fold's validation cases of ``UADNET_PREPROCESSED/<dataset>/splits_final.json`` (``all``: every case)."""
    splits_file = paths.preprocessed_folder() / dataset / SPLITS_FILE
    if not splits_file.is_file():
        raise FileNotFoundError(f"{splits_file} is missing: point UADNET_PREPROCESSED at the folder that holds "
                                f"{dataset} preprocessed, or run uadnet_plan_and_preprocess -d {dataset}")
    splits = load_json(splits_file)
    if fold == "all":
        return sorted({c for s in splits for c in s["train"] + s["val"]})
    if not fold.isdigit() or not 0 <= int(fold) < len(splits):
        raise ValidationMapsError(f"fold {fold} is not in {splits_file} ({len(splits)} folds): choose other folds")
    return list(splits[int(fold)]["val"])


def validation_cases(plans: Plans, configuration: str, fold: str) -> list[ValidationCase]:
    """The validation cases of ``fold`` for ``plans.dataset_name`` (``plans.validation`` chooses how many and their
    synthetic anomalies); ``FileNotFoundError`` naming UADNET_PREPROCESSED and the missing file otherwise."""
    return make_validation_set(paths.preprocessed_folder() / plans.dataset_name, plans, configuration,
                               validation_ids(plans.dataset_name, fold))


def held_out_novelty(fold: TrainedFold, cases: Sequence[ValidationCase]) -> list[IntensityNovelty | None]:
    """Per case, the fold's intensity novelty with its histogram from the *other* cases (weight 1), as training
    scored its validation cases; None for every case when the fold adds no novelty term."""
    novelty = fold.postprocessing.intensity_novelty
    if novelty is None or novelty.weight == 0:
        return [None] * len(cases)
    return leave_one_out(novelty, [c.healthy for c in cases], [c.foreground for c in cases])


def validation_map(p: Predictor, fold: TrainedFold, case: ValidationCase, image: np.ndarray,
                   novelty: IntensityNovelty | None = None) -> np.ndarray:
    """The postprocessed map (z, y, x) float32 of ``image`` (``case.healthy`` or ``case.corrupted``, (c, z, y, x))
    by ``fold`` of ``p``: as :meth:`Predictor.score_prepared` makes each fold's map (precision, step size), with the
    intensity novelty of ``novelty`` (the case's entry of :func:`held_out_novelty`) when given."""
    score, restoration, _ = p.fold_scores(fold, image, case.foreground)
    unit = None if novelty is None else novelty.term(image)
    return np.asarray(p.postprocess(fold, score, image, restoration, case.foreground, case.spacing, unit),
                      np.float32)


def fold_maps(p: Predictor, fold: TrainedFold, case: ValidationCase, novelty: IntensityNovelty | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(anomalous, healthy)`` foreground scores (1-D float32) of one validation case (:func:`validation_map`)."""
    anomalous, healthy = (validation_map(p, fold, case, image, novelty)[case.foreground]
                          for image in (case.corrupted, case.healthy))
    return anomalous, healthy
