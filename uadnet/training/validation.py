"""Validation on held-out healthy cases with seeded synthetic anomalies, and calibration on the same cases.

The anomalies are drawn once per run (seeded by the case name), on the whole preprocessed volume (c, z, y, x)
with the configuration's spacing (mm), so every validation sees the same data. Scores come from the method's
scorer through the same sliding window as prediction (:func:`uadnet.scoring.scorers.score_volume`).
"""

from __future__ import annotations

import copy
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from uadnet.corruption.intensity_blobs import IntensityBlobs
from uadnet.corruption.many_tasks import ManyTasks
from uadnet.corruption.registry import build_corruption
from uadnet.plans import ConfigurationPlan, Plans
from uadnet.postprocessing import Postprocessing, apply_postprocessing, decide_postprocessing
from uadnet.postprocessing.intensity_novelty import fit_intensity_novelty
from uadnet.postprocessing.postprocessing import MIN_GAIN
from uadnet.postprocessing.residual_normalisation import (
    ResidualNormalisation,
    fit_residual_normalisation,
    residual_features,
)
from uadnet.scoring.average_precision import balanced, class_aps, class_balanced_ap
from uadnet.scoring.calibration import CaseScore, calibrate
from uadnet.scoring.scorers import Scorer, score_volume
from uadnet.scoring.sliding_window import tile_starts
from uadnet.training.dataloading import PreprocessedDataset
from uadnet.utilities.file_io import load_json

DEFAULT_NOVELTY_QUANTILE = 0.99  # of healthy novelty and maps, when the residual is not normalised
# Residual normalisation is kept unless the raw maps score a relatively higher postprocessed validation AP than this.
# Measured on 10 development models (documentation/benchmarks.md): raw / normalised validation AP 0.94-1.07 where the
# normalisation is what raised test AP and case AUROC; 1.66 on an L1-trained brain model, whose test AP it cut from
# 0.073 to 0.034.
# Session 15: a brain model at 1.106 lost test AP by dropping it (pooled 0.309 against 0.374 kept), hence 0.25.
RESIDUAL_NORMALISATION_TOLERANCE = 0.25
CLASS_NAMES = {1: "anomalies", 2: "small_anomalies"}  # validation label values
# Amplitude scale of the small validation anomalies' fractal intensity change (on [0, 1] images; the large ones': 0.05).
# A spot of a few voxels is either conspicuous or invisible to every model: at 0.05 their validation AP was 0.0001
# (brain) and 0.002 (photographs) whatever the postprocessing, so they weighed nothing in the choice.
SMALL_INTENSITY_SCALE = 0.1


@dataclass
class ValidationCase:
    key: str
    healthy: np.ndarray  # (c, z, y, x) float32 in [0, 1]
    corrupted: np.ndarray  # (c, z, y, x) with synthetic anomalies
    anomaly: np.ndarray  # (z, y, x) uint8 where a soft mask ≥ 0.5: 1 the family's anomalies, 2 the small ones; else 0
    foreground: np.ndarray  # (z, y, x) bool
    spacing: list[float]  # (z, y, x) mm of the preprocessed grid


def make_validation_set(preprocessed_dataset_folder: str | os.PathLike, plans: Plans, configuration: str | None,
                        case_ids: Sequence[str]) -> list[ValidationCase]:
    """Up to ``validation.max_cases`` of ``case_ids`` (evenly spread over the sorted list), each with anomalies of
    ``validation.corruption`` (a "many tasks" family sized by ``validation.size_law`` when set) drawn with
    ``validation.seed``, then ``validation.small_anomalies`` small ones (label 2, where the others are not; their own
    random stream, so the others do not depend on them): spots of the same family for ``intensity_blobs``, else
    fractal intensity changes (when that task validates) of ``SMALL_INTENSITY_SCALE``; the foreign image of case i is
    case i + 1."""
    cfg, vp = plans.configuration(configuration), plans.validation
    seed = vp.seed
    ids = sorted(case_ids)
    n = min(len(ids), max(1, vp.max_cases))
    ids = [ids[i] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]
    dataset = PreprocessedDataset(Path(preprocessed_dataset_folder) / cfg.data_identifier, ids)
    corruption = build_corruption(vp.corruption, plans)
    if vp.size_law is not None and hasattr(corruption, "size_law"):
        corruption.size_law = vp.size_law
    small: IntensityBlobs | ManyTasks | None = None
    if vp.small_anomalies > 0 and vp.corruption == "intensity_blobs":
        small = IntensityBlobs.small(vp.small_size_mm)
    elif vp.small_anomalies > 0:
        tasks = ["fractal_intensity"] if "fractal_intensity" in vp.tasks else list(vp.tasks)
        small = ManyTasks(tasks, max_anomalies=1, clean_fraction=0.0, size_mm=vp.small_size_mm,
                          intensity_scale=SMALL_INTENSITY_SCALE)
    loaded = [tuple(np.array(a) for a in dataset.load(c)) for c in ids]
    cases = []
    for i, (case, (image, fg)) in enumerate(zip(ids, loaded)):
        foreign, foreign_fg = loaded[(i + 1) % len(loaded)] if len(loaded) > 1 else (None, None)
        spacing = [float(v) for v in load_json(dataset.folder / f"{case}.json")["spacing_after_resampling"]]
        rng = np.random.default_rng([seed, zlib.crc32(case.encode())])
        grid = (1.0, *spacing[1:]) if image.shape[1] == 1 else spacing
        foreign_fg = None if foreign_fg is None else foreign_fg != 0
        out = corruption(image, fg != 0, rng, grid, foreign=foreign, foreign_foreground=foreign_fg)
        corrupted, label = out.image, (out.mask >= 0.5).astype(np.uint8)
        if small is not None:
            rng_small = np.random.default_rng([seed, zlib.crc32(case.encode()), 1])
            for _ in range(vp.small_anomalies):
                spot = small(corrupted, fg != 0, rng_small, grid, foreign=foreign, foreign_foreground=foreign_fg)
                corrupted = spot.image
                label[(spot.mask >= 0.5) & (label == 0)] = 2
        cases.append(ValidationCase(case, image.astype(np.float32), corrupted.astype(np.float32), label, fg != 0,
                                    spacing))
    return cases


def _score(scorer: Scorer, image: np.ndarray, fg: np.ndarray, cfg: ConfigurationPlan, device: torch.device,
           features: bool = False, mirror: bool = True
           ) -> np.ndarray | tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The raw map (z, y, x), mirrored as ``inference.mirror_axes`` says unless ``mirror`` is false; with
    ``features``, also the residual-normalisation features of the case."""
    inf = cfg.inference
    score, restoration = score_volume(scorer, image, cfg.patch_size, inf.step_size, inf.gaussian_sigma_scale,
                                      inf.batch_size, device, foreground=fg,
                                      mirror_axes=inf.mirror_axes if mirror else ())
    if not features:
        return score
    return score, residual_features(image, restoration, cfg.dim == 2)


def validation_ap(scorer: Scorer, cases: Sequence[ValidationCase], cfg: ConfigurationPlan, device: torch.device
                  ) -> float | None:
    """Average precision over the foreground voxels of all cases, each anomaly class weighed alike
    (:func:`class_balanced_ap`: the pooled AP when there are no small anomalies); None without any anomaly. Without
    test-time mirroring: it runs every epoch and only compares the run's checkpoints."""
    scores, labels = [], []
    for case in cases:
        score = _score(scorer, case.corrupted, case.foreground, cfg, device, mirror=False)
        scores.append(score[case.foreground])
        labels.append(case.anomaly[case.foreground])
    return class_balanced_ap(scores, labels)


def _decide(healthy: list[np.ndarray], anomalous: list[np.ndarray], cases: Sequence[ValidationCase],
            cfg: ConfigurationPlan, normalisation: ResidualNormalisation | None, fpr_for_components: float
            ) -> tuple[Postprocessing, list[dict], float, list[np.ndarray], dict[int, float]]:
    """The greedy postprocessing choice on one kind of map (normalised or raw): fit the intensity novelty (when the
    plans ask for it), choose the steps, return ``(postprocessing, trials, validation AP after it, healthy maps
    postprocessed, AP per anomaly class after it)``."""
    in_plane = cfg.dim == 2
    fgs, spacings, labels = [c.foreground for c in cases], [c.spacing for c in cases], [c.anomaly for c in cases]
    novelty, units = None, {"healthy": None, "anomalous": None}
    if cfg.inference.intensity_novelty:
        quantile = cfg.inference.residual_normalisation_quantile if normalisation is not None else None
        fitted = fit_intensity_novelty([c.healthy for c in cases], fgs, healthy, quantile or DEFAULT_NOVELTY_QUANTILE)
        if fitted is not None:  # each case scored with the histogram of the others (leave one out)
            novelty, loo = fitted
            units = {"healthy": [n.term(c.healthy) for n, c in zip(loo, cases)],
                     "anomalous": [n.term(c.corrupted) for n, c in zip(loo, cases)]}

    def processed(maps: Sequence[np.ndarray], pp: Postprocessing, kind: str) -> list[np.ndarray]:
        unit = units[kind] or [None] * len(maps)
        return [apply_postprocessing(m, f, sp, pp, in_plane, novelty_unit=u)
                for m, f, sp, u in zip(maps, fgs, spacings, unit)]

    def threshold(pp: Postprocessing) -> float:
        return calibrate(processed(healthy, pp, "healthy"), fgs, (fpr_for_components,))["voxel_thresholds"][
            str(fpr_for_components)]

    pp, trials = decide_postprocessing(anomalous, labels, fgs, spacings, in_plane, calibrate_threshold=threshold,
                                       novelty=novelty, novelty_units=units["anomalous"], healthy_scores=healthy)
    per_class = class_aps(processed(anomalous, pp, "anomalous"), labels)
    after = balanced(per_class) or 0.0  # class_balanced_ap, not computed twice
    return (replace(pp, residual_normalisation=normalisation), trials, after, processed(healthy, pp, "healthy"),
            per_class)


def postprocess_and_calibrate(scorer: Scorer, cases: Sequence[ValidationCase], cfg: ConfigurationPlan,
                              device: torch.device, fpr_for_components: float = 0.01) -> tuple[dict, dict]:
    """After training: score the validation cases with and without their synthetic anomalies (mirrored as
    ``inference.mirror_axes`` says, as prediction will); choose the postprocessing on the anomalous maps (each step
    kept only if it raises validation AP, each anomaly class weighed alike; components are taken at the healthy
    ``fpr_for_components`` threshold; the intensity novelty fitted on the healthy images when the plans ask for
    it); calibrate thresholds on the postprocessed healthy maps. When the plans ask for residual normalisation it is
    fitted on the healthy maps and the choice is made twice, on normalised and on raw maps: the normalisation is kept
    unless the raw maps' postprocessed validation AP is higher by more than ``RESIDUAL_NORMALISATION_TOLERANCE``
    (relative; it separates healthy from abnormal cases in ways the voxel AP on synthetic anomalies does not show).
    Returns ``(postprocessing record, calibration)``, both JSON-ready."""
    fgs, labels = [c.foreground for c in cases], [c.anomaly for c in cases]
    quantile = cfg.inference.residual_normalisation_quantile
    if quantile is not None and not 0.0 < quantile < 1.0:
        raise ValueError(f"inference.residual_normalisation_quantile of configuration {cfg.data_identifier} "
                         f"must be in (0, 1) or null, got {quantile}: fix uadnet_plans.json")
    scored = [_score(scorer, c.healthy, c.foreground, cfg, device, features=quantile is not None) for c in cases]
    raw = [_score(scorer, c.corrupted, c.foreground, cfg, device, features=quantile is not None) for c in cases]
    if quantile is None:
        healthy, anomalous = scored, raw
    else:
        healthy, anomalous = [m for m, _ in scored], [m for m, _ in raw]
    raw_ap = class_balanced_ap(anomalous, labels)
    pp, trials, after, healthy_done, per_class = _decide(healthy, anomalous, cases, cfg, None, fpr_for_components)
    normalised_ap, comparison = None, None
    if quantile is not None:
        normalisation = fit_residual_normalisation(healthy, [f for _, f in scored], fgs, quantile)
        normalised = [normalisation.apply_features(m, f) for m, f in raw]
        normalised_ap = class_balanced_ap(normalised, labels)
        chosen = _decide([normalisation.apply_features(m, f) for m, f in scored], normalised, cases, cfg,
                         normalisation, fpr_for_components)
        kept = after <= chosen[2] * (1 + RESIDUAL_NORMALISATION_TOLERANCE)
        comparison = {"ap_with": chosen[2], "ap_without": after, "tolerance": RESIDUAL_NORMALISATION_TOLERANCE,
                      "kept": kept}
        if kept:
            pp, trials, after, healthy_done, per_class = chosen
    calibration = calibrate(healthy_done, fgs, spec=CaseScore(cfg.inference.case_score))
    record = {"postprocessing": pp.to_dict(), "trials": trials,
              "validation_ap_all_voxels": {"before": raw_ap, "after_residual_normalisation":
                                           normalised_ap if pp.residual_normalisation is not None else None,
                                           "after": after},
              "validation_ap_per_class_after": {CLASS_NAMES.get(k, str(k)): v for k, v in per_class.items()},
              "residual_normalisation_choice": comparison, "cases": [c.key for c in cases]}
    calibration["cases"] = [c.key for c in cases]
    calibration["mirror_axes"] = list(cfg.inference.mirror_axes)  # prediction scores as calibrated
    return record, calibration


def _tiles(cases: Sequence[ValidationCase], cfg: ConfigurationPlan, step_size: float) -> list[list[list[int]]]:
    """Per case, the sliding window's tile starts per spatial axis (the volume padded to the patch, as scored)."""
    patch = list(cfg.patch_size)
    return [tile_starts([max(n, p) for n, p in zip(c.healthy.shape[-len(patch):], patch)], patch, step_size)
            for c in cases]


def choose_step_and_calibrate(scorer: Scorer, cases: Sequence[ValidationCase], cfg: ConfigurationPlan,
                              device: torch.device) -> tuple[dict, dict, float]:
    """:func:`postprocess_and_calibrate` at ``inference.step_size`` and, when ``inference.coarse_step_size`` places
    other tiles on some validation case, at that step too; the coarse step (fewer tiles: faster) is kept unless its
    postprocessed validation AP is lower by more than ``MIN_GAIN``. Returns ``(record, calibration, step)``; the
    record lists the AP of every step tried under ``step_size_trials``."""
    fine, coarse = cfg.inference.step_size, cfg.inference.coarse_step_size  # checked by the plans (fine ≤ coarse)
    record, calibration = postprocess_and_calibrate(scorer, cases, cfg, device)
    trials = {str(fine): record["validation_ap_all_voxels"]["after"]}
    step = fine
    if coarse is not None and coarse != fine and _tiles(cases, cfg, coarse) != _tiles(cases, cfg, fine):
        coarse_cfg = replace(cfg, inference=replace(cfg.inference, step_size=coarse))
        coarse_record, coarse_calibration = postprocess_and_calibrate(scorer, cases, coarse_cfg, device)
        trials[str(coarse)] = coarse_record["validation_ap_all_voxels"]["after"]
        if (trials[str(coarse)] or 0.0) >= (trials[str(fine)] or 0.0) - MIN_GAIN:
            record, calibration, step = coarse_record, coarse_calibration, coarse
    record["step_size_trials"] = trials
    return record, calibration, step


def networks_to_calibrate(fold_folder: Path, final_network: torch.nn.Module, final_iteration: int
                          ) -> list[tuple[str, torch.nn.Module | None]]:
    """``(checkpoint, network)`` pairs calibrated after training: checkpoint_final.pth with ``final_network``, and
    checkpoint_best.pth when it exists, its weights loaded into a copy of the network (None when it was written at
    the final iteration: the same weights, whose calibration is then copied rather than computed again)."""
    from uadnet.utilities import checkpoints as ckpt

    out: list[tuple[str, torch.nn.Module | None]] = [(ckpt.FINAL, final_network)]
    if (fold_folder / ckpt.BEST).is_file():
        state = ckpt.load_checkpoint(fold_folder / ckpt.BEST)
        best = None
        if state.get("iteration") != final_iteration:
            best = copy.deepcopy(final_network)
            best.load_state_dict(state["network"])
        out.append((ckpt.BEST, best))
    return out
