"""``uadnet_ensemble -i OUT1 OUT2 ... -o OUT``: average prediction folders of ``uadnet_predict`` (or
``uadnet_baseline``) into one folder of the same layout.

Members are rescaled to a common threshold before averaging. Member ``i`` has voxel threshold ``t_i`` and case
threshold ``c_i`` (its ``prediction.json``); the ensemble's are their means ``T`` and ``C``, and

    map = mean_i (m_i · T / t_i),      score = mean_i (s_i · C / c_i).

Each rescaled member reaches ``T`` exactly where it reaches its own threshold, so maps of different scales (two
methods, or a method and a baseline) weigh alike, and a voxel is in the mask (``map >= T``) when the members'
threshold-normalised scores ``m_i / t_i`` average at least 1. A plain mean of differently scaled maps compared with
the mean of their thresholds would have no such meaning.

What the thresholds then guarantee: uadnet keeps no healthy validation maps (each fold's ``calibration.json`` holds
thresholds and healthy case scores only), so by default the averaged map is not recalibrated to exactly ``--fpr``
(that needs every member's healthy validation cases scored again: ``recalibrate``, below). Instead: ``map >= T``
implies that some member is at or above its own threshold, so on healthy data the ensemble's mask flags at most the
sum of the members' false-positive rates (``K · fpr`` for ``K`` members; exactly ``fpr`` when the members agree),
and a healthy case is flagged at most ``K`` times as often as by one member. ``prediction.json`` states this.
Members with the same thresholds (e.g. a folder with itself) are averaged with weights exactly 1: the ensemble
equals the member bit for bit.

With ``recalibrate`` (``uadnet_ensemble --recalibrate``) the thresholds are calibrated instead, for members
predicted by ``uadnet_predict`` from models of one dataset, plans, configuration grid and folds: per fold ``f``,
each member's fold-``f`` network scores fold ``f``'s healthy validation cases
(:mod:`uadnet.inference.validation_maps`: through its postprocessing, at its prediction's precision and step size),
the maps are combined as above (:func:`rescaled_mean` to ``T``) and the voxel threshold is the ``(1 − fpr)``
quantile of their foreground voxels (:func:`calibrate`); the case scores are combined as above
(:func:`rescaled_score` to ``C``, each ``s_i`` the member's case score of its map) and the case threshold is their
quantile at the members' ``case_threshold_quantile``. The ensemble's thresholds are the means over the folds, as
``uadnet_predict`` averages its folds' thresholds. The maps and scores are unchanged (still rescaled to ``T`` and
``C``); only the thresholds, masks and flags differ.

Cases are the finished ones (``per_case/<case>.json``); every member must hold the same cases, on the same grid,
predicted at the same ``--fpr``. Restorations are not averaged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from uadnet import __version__
from uadnet.dataset.raw_dataset import Case
from uadnet.imageio.geometry import grid_mismatch
from uadnet.imageio.reader_writer_registry import READER_WRITERS, reader_writer_for
from uadnet.inference.export import (
    PER_CASE,
    PREDICTION_FILE,
    case_outputs,
    case_record,
    start_case,
    write_map_and_mask,
    write_scores_csv,
)
from uadnet.scoring.calibration import CALIBRATION_FILE, calibrate
from uadnet.scoring.calibration import case_threshold as quantile_case_threshold
from uadnet.utilities.file_io import load_json, save_json

if TYPE_CHECKING:
    from uadnet.inference.predictor import Predictor

RULE = ("map = mean_i(m_i * T / t_i), score = mean_i(s_i * C / c_i); T, C = means of the members' thresholds "
        "(also the ensemble's thresholds unless recalibrated)")


def _map_file(folder: Path, case: str) -> tuple[Path, str] | None:
    """``(file, ending)`` of ``case``'s map in a prediction folder (any ending a registered reader knows, longest
    first, so ``.nii.gz`` wins over ``.gz``), or ``None``."""
    endings = sorted({e for cls in READER_WRITERS.values() for e in cls.supported_file_endings}, key=lambda e: -len(e))
    for ending in endings:
        if (folder / f"{case}{ending}").is_file():
            return folder / f"{case}{ending}", ending
    return None


class EnsembleError(ValueError):
    """The member folders cannot be averaged; the message names the folder, the case and the fix."""


@dataclass
class Member:
    """One prediction folder: its ``prediction.json``, finished cases' records and map files."""

    folder: Path
    info: dict[str, Any]
    records: dict[str, dict[str, Any]]
    maps: dict[str, Path]

    @property
    def voxel_threshold(self) -> float:
        return float(self.info["voxel_threshold"])

    @property
    def case_threshold(self) -> float:
        return float(self.info["case_threshold"])


def load_member(folder: str | os.PathLike) -> Member:
    """Read a prediction folder; ``EnsembleError`` when it is not one in uadnet's layout or its thresholds cannot
    be used (missing, not positive, or its records written with other thresholds)."""
    folder = Path(folder).resolve()
    info_file = folder / PREDICTION_FILE
    if not info_file.is_file():
        raise EnsembleError(f"{info_file} is missing: {folder} is not a prediction folder (write one with "
                            "uadnet_predict or uadnet_baseline)")
    info = load_json(info_file)
    if info.get("output_format", "uadnet") != "uadnet":
        raise EnsembleError(f"{folder} was written with --output_format {info['output_format']}: ensemble folders "
                            "in uadnet's layout (predict again without --output_format)")
    for key in ("voxel_threshold", "case_threshold"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise EnsembleError(f"{info_file}: '{key}' is {value!r}; the ensemble rescales each member by its "
                                "thresholds and needs positive finite ones")
    records = {}
    for p in (sorted((folder / PER_CASE).glob("*.json")) if (folder / PER_CASE).is_dir() else []):
        if p.name.startswith("."):
            continue
        record = load_json(p)
        for key in ("voxel_threshold", "case_threshold"):
            if not math.isclose(record.get(key, math.nan), info[key], rel_tol=1e-9):
                raise EnsembleError(f"{p} was written with {key} {record.get(key)}, {info_file} says {info[key]}: "
                                    "the folder mixes runs with different settings; predict it again into an "
                                    "empty folder")
        records[p.stem] = record
    if not records:
        raise EnsembleError(f"{folder} holds no finished case ({PER_CASE}/<case>.json); predict into it first")
    maps = {c: _map_file(folder, c) for c in records}
    if unmapped := [c for c, found in maps.items() if found is None]:
        raise EnsembleError(f"{folder}: case(s) {', '.join(unmapped[:5])} have a record but no map; predict them "
                            "again (uadnet_predict ... --continue_prediction)")
    return Member(folder, info, records, {c: found[0] for c, found in maps.items()})


def check_members(members: Sequence[Member], output: Path) -> list[str]:
    """The cases common to all members; ``EnsembleError`` when the members differ in cases or ``--fpr``, or when
    ``output`` is a member or lies inside one."""
    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two folders (-i OUT1 OUT2 ...), got {len(members)}")
    for m in members:
        if output == m.folder or m.folder in output.parents:
            raise EnsembleError(f"the output folder {output} must not be a member ({m.folder}) or inside one")
    fprs = {str(m.info.get("fpr")) for m in members}
    if len(fprs) > 1:
        listed = ", ".join(f"{m.folder} {m.info.get('fpr')}" for m in members)
        raise EnsembleError(f"the members' masks were calibrated at different false-positive rates ({listed}): "
                            "predict them at the same --fpr")
    cases = sorted(members[0].records)
    for m in members[1:]:
        if missing := sorted(set(cases) - set(m.records)):
            raise EnsembleError(f"case(s) {', '.join(missing[:10])} of {members[0].folder} are not finished in "
                                f"{m.folder}: predict them there (uadnet_predict ... --continue_prediction) or leave "
                                "that folder out")
        if extra := sorted(set(m.records) - set(cases)):
            raise EnsembleError(f"case(s) {', '.join(extra[:10])} of {m.folder} are not finished in "
                                f"{members[0].folder}: predict them there or leave that folder out")
    return cases


def _read_map(path: Path, case: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A member's map ``(z, y, x)`` float32 and its properties (the grid to write on)."""
    amap, props = reader_writer_for(path.name[len(case):]).read_seg(path)  # the file is <case><ending>
    if amap.shape[0] != 1:
        raise EnsembleError(f"{path}: {amap.shape[0]} channels; an anomaly map has exactly one")
    return amap[0], props


def rescaled_mean(maps: Iterable[np.ndarray], thresholds: Sequence[float], target: float) -> np.ndarray:
    """``mean_i(m_i · target / t_i)`` in float64, member by member: the members' maps rescaled to the common
    threshold ``target`` and averaged (module docstring). ``target`` 1 gives the mean of the threshold-normalised
    maps ``m_i / t_i`` (what ``uadnet_find_best_configuration`` scores, mask ``>= 1``)."""
    total, count = None, 0
    for amap, threshold in zip(maps, thresholds, strict=True):
        term = np.asarray(amap).astype(np.float64) * (target / threshold)
        if total is None:
            total = term
        else:
            total += term
        count += 1
    if total is None:
        raise EnsembleError("an ensemble needs at least one member map")
    return total / count


def rescaled_score(scores: Sequence[float], thresholds: Sequence[float], target: float) -> float:
    """``mean_i(s_i · target / c_i)``: the members' case scores rescaled to the common case threshold ``target``
    and averaged (module docstring)."""
    return float(np.mean([s * (target / c) for s, c in zip(scores, thresholds, strict=True)]))


def ensemble_case(members: Sequence[Member], case: str, voxel_threshold: float, case_threshold: float
                  ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``(map, score, properties)`` of one case: the members' rescaled maps and scores averaged (module docstring),
    computed in float64; ``EnsembleError`` naming both files when a member's map lies on another grid."""
    first: dict[str, Any] = {}

    def maps() -> Iterator[np.ndarray]:  # read one member at a time, each checked against the first's grid
        for m in members:
            amap, p = _read_map(m.maps[case], case)
            if not first:
                first.update(shape=amap.shape, props=p, path=m.maps[case])
            elif (diff := grid_mismatch(amap.shape, p, first["shape"], first["props"])) is not None:
                raise EnsembleError(f"case {case}: {m.maps[case]} and {first['path']} are not on the same grid "
                                    f"({diff}); the members must be predictions of the same input images")
            yield amap

    total = rescaled_mean(maps(), [m.voxel_threshold for m in members], voxel_threshold)
    score = rescaled_score([m.records[case]["score"] for m in members], [m.case_threshold for m in members],
                           case_threshold)
    return total.astype(np.float32), score, first["props"]


def _check_recalibratable(m: Member) -> None:
    """``EnsembleError`` naming ``m``'s ``prediction.json`` unless it names the model that predicted it (model
    folder, folds, ``--fpr``): checked for every member before any model is loaded."""
    info_file = m.folder / PREDICTION_FILE
    if m.info.get("method") == "ensemble":
        raise EnsembleError(f"{info_file} is an ensemble's: --recalibrate needs the members' models; ensemble its "
                            f"members ({', '.join(str(x.get('folder')) for x in m.info.get('members', []))}) instead")
    if not m.info.get("model_folder") or not m.info.get("folds") or m.info.get("fpr") is None:
        raise EnsembleError(f"{info_file} does not name the model that predicted it (model_folder, folds, fpr; a "
                            "uadnet_baseline folder has none): --recalibrate scores each member's model on its "
                            "healthy validation cases; predict this member with uadnet_predict, or ensemble without "
                            "--recalibrate")


def _member_predictor(m: Member, device: str | None) -> Predictor:
    """The model that predicted member ``m`` (its ``prediction.json``: model folder, folds, checkpoint, ``--fpr``,
    precision, step size, mirror axes), loaded; ``EnsembleError`` naming the file when the model cannot be loaded
    or its calibration is no longer the one the member was predicted with."""
    from uadnet.inference.predictor import PredictionSettings, Predictor  # torch: only with --recalibrate

    info_file = m.folder / PREDICTION_FILE
    settings = PredictionSettings(Path("."), Path("."), None, model_folder=Path(m.info["model_folder"]),
                                  folds=[str(f) for f in m.info["folds"]], device=device,
                                  step_size=m.info.get("step_size"), precision=m.info.get("precision"),
                                  mirror_axes=m.info.get("mirror_axes", []),  # absent: predicted before mirroring
                                  fpr=m.info["fpr"], progress_bar=False,
                                  **({"checkpoint": m.info["checkpoint"]} if m.info.get("checkpoint") else {}))
    try:
        p = Predictor(settings)
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # PredictionError, PathError: RuntimeError
        raise EnsembleError(f"member {m.folder} (model folder from {info_file}): {e}") from None
    key = str(m.info["fpr"])
    recorded = m.info.get("voxel_thresholds_per_fold") or {}
    for f in p.folds:
        now, then = f.calibration["voxel_thresholds"][key], recorded.get(f.fold, {}).get(key)
        if then is None or not math.isclose(now, then, rel_tol=1e-9):
            raise EnsembleError(f"{f.folder / CALIBRATION_FILE} has voxel threshold {now} at fpr {key}, {info_file} "
                                f"was predicted with {then}: the model was retrained or recalibrated since; predict "
                                f"{m.folder} again")
    return p


def _check_alike(members: Sequence[Member], predictors: Sequence[Predictor]) -> None:
    """``EnsembleError`` naming every member unless all models share dataset, plans, configuration grid (data
    identifier) and folds: only then do they have common healthy validation cases."""
    def key(p: Predictor) -> tuple[str, str, str, tuple[str, ...]]:
        return p.plans.dataset_name, p.s.plans_name, p.cfg.data_identifier, tuple(sorted(f.fold for f in p.folds))

    if len({key(p) for p in predictors}) > 1:
        listed = "; ".join(f"{m.folder}: dataset {k[0]}, plans {k[1]}, grid {k[2]}, folds {' '.join(k[3])}"
                           for m, k in zip(members, map(key, predictors)))
        raise EnsembleError(f"--recalibrate needs members of one dataset, plans, configuration grid and folds (their "
                            f"healthy validation cases are then the same): {listed}. Predict the members with models "
                            "of the same plans and configuration and the same -f, or ensemble without --recalibrate")


def recalibrate(members: Sequence[Member], voxel_target: float, case_target: float, device: str | None = None,
                progress_bar: bool = True) -> dict[str, Any]:
    """Thresholds of the ensemble calibrated on the folds' healthy validation cases (module docstring) for the maps
    rescaled to ``voxel_target`` and case scores rescaled to ``case_target`` (the members' mean thresholds).
    Returns ``voxel_threshold``, ``case_threshold`` (means over the folds, in map and case-score units),
    ``case_threshold_quantile`` and ``per_fold`` (each fold's thresholds and validation cases). Needs
    ``UADNET_PREPROCESSED`` with the dataset's preprocessed cases and ``splits_final.json``."""
    from uadnet.inference.validation_maps import held_out_novelty, validation_cases, validation_map

    for m in members:
        _check_recalibratable(m)
    predictors = [_member_predictor(m, device) for m in members]
    _check_alike(members, predictors)
    fpr = float(members[0].info["fpr"])
    quantiles = {f.calibration.get("case_threshold_quantile", 0.95) for p in predictors for f in p.folds}
    if len(quantiles) > 1:
        raise EnsembleError(f"the members' folds calibrated their case thresholds at different quantiles "
                            f"({sorted(quantiles)}): recalibrate them alike (uadnet_train ... --c)")
    quantile = float(quantiles.pop())
    voxel_t, case_t = [m.voxel_threshold for m in members], [m.case_threshold for m in members]
    first, per_fold = predictors[0], {}
    folds = [f.fold for f in first.folds]
    for fold in tqdm(folds, desc="recalibrating", unit="fold", disable=not progress_bar):
        cases = validation_cases(first.plans, first.config_name, fold)
        trained = [next(f for f in p.folds if f.fold == fold) for p in predictors]
        novelty = [held_out_novelty(f, cases) for f in trained]
        combined, scores = [], []
        for i, case in enumerate(cases):  # one case at a time: only the combined map is kept
            maps = [validation_map(p, f, case, case.healthy, n[i]) for p, f, n in zip(predictors, trained, novelty)]
            combined.append(rescaled_mean(maps, voxel_t, voxel_target).astype(np.float32))  # as ensemble_case
            scores.append(rescaled_score([p.case_score(amap, case.foreground)
                                          for amap, p in zip(maps, predictors)], case_t, case_target))
        voxel = calibrate(combined, [c.foreground for c in cases], (fpr,))["voxel_thresholds"][str(fpr)]
        per_fold[fold] = {"voxel_threshold": voxel, "case_threshold": quantile_case_threshold(scores, quantile),
                          "cases": [c.key for c in cases], "healthy_case_scores": scores}
        used = per_fold[fold]["cases"]
        if differ := [str(f.folder) for f in trained if f.calibration.get("cases") not in (None, used)]:
            print(f"note: fold {fold}: the validation cases ({len(cases)}) differ from those {', '.join(differ)} "
                  "calibrated on (another validation section in its plans)")
    return {"voxel_threshold": float(np.mean([r["voxel_threshold"] for r in per_fold.values()])),
            "case_threshold": float(np.mean([r["case_threshold"] for r in per_fold.values()])),
            "case_threshold_quantile": quantile, "per_fold": per_fold}


def ensemble_folders(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, progress_bar: bool = True,
                     recalibrate_thresholds: bool = False, device: str | None = None) -> int:
    """Average the member folders ``inputs`` into ``output`` (maps, masks, ``per_case/``, ``scores.csv``,
    ``prediction.json``, every file written atomically, each case's record last); returns the case count. With
    ``recalibrate_thresholds``, masks and flags use thresholds calibrated on the members' healthy validation cases
    (:func:`recalibrate`, scored on ``device``; default the plans' ``compute.device``)."""
    members = [load_member(f) for f in inputs]
    out = Path(output).resolve()
    cases = check_members(members, out)
    if len({m.folder for m in members}) < len(members):
        print("note: a folder is given more than once; it weighs that many times")
    T = float(np.mean([m.voxel_threshold for m in members]))  # the targets the members are rescaled to
    C = float(np.mean([m.case_threshold for m in members]))
    ending = _map_file(members[0].folder, cases[0])[1]
    writer = reader_writer_for(ending)
    fpr = members[0].info.get("fpr")
    if recalibrate_thresholds:  # before anything is written
        calibration = recalibrate(members, T, C, device, progress_bar)
        voxel_threshold, case_threshold = calibration["voxel_threshold"], calibration["case_threshold"]
        thresholds = {"calibrated_false_positive_rate": fpr, "rescaled_to": {"voxel": T, "case": C}, **calibration,
                      "why": "recalibrated: per fold, the members' fold networks scored the fold's healthy validation "
                             "cases, combined by the rule; voxel threshold = (1 - fpr) quantile of their foreground "
                             "voxels, case threshold = case_threshold_quantile quantile of their case scores; the "
                             "ensemble's = mean over the folds"}
    else:
        voxel_threshold, case_threshold = T, C
        thresholds = {"calibrated_false_positive_rate": None,
                      "healthy_voxel_false_positive_rate_at_most": None if fpr is None else len(members) * fpr,
                      "why": "each member is rescaled to the mean threshold T; map >= T implies a member at or above "
                             "its own threshold (union bound); not recalibrated (uadnet_ensemble --recalibrate does)"}
    out.mkdir(parents=True, exist_ok=True)
    save_json({
        "method": "ensemble", "voxel_threshold": voxel_threshold, "case_threshold": case_threshold, "fpr": fpr,
        "rule": RULE, "members": [{"folder": str(m.folder), "voxel_threshold": m.voxel_threshold,
                                   "case_threshold": m.case_threshold, **{k: m.info.get(k) for k in (
                                       "method", "configuration", "folds", "fold", "model_folder", "fpr")}}
                                  for m in members],
        "thresholds": thresholds, "uadnet_version": __version__}, out / PREDICTION_FILE)
    for case in tqdm(cases, desc="ensembling", unit="case", disable=not progress_bar):
        t0 = time.perf_counter()
        outputs = case_outputs(out, case, ending)
        start_case(outputs)
        amap, score, props = ensemble_case(members, case, T, C)
        write_map_and_mask(writer, amap, props, outputs, voxel_threshold)
        first = members[0].records[case]
        record = case_record(Case(case, [Path(n) for n in first.get("inputs", [])], []), amap, score,
                             voxel_threshold, case_threshold, {"ensemble": time.perf_counter() - t0})
        record["members"] = [{"folder": str(m.folder), "score": m.records[case]["score"]} for m in members]
        save_json(record, outputs["record"])
    return write_scores_csv(out, cases)
