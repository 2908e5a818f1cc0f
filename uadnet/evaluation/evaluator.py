"""Evaluate a folder of anomaly maps against a folder of ground-truth anomaly labels.

Prediction folder (what ``uadnet_predict`` writes): per case ``case.<ending>`` (float anomaly map),
``case_mask.<ending>`` and optionally ``case_restoration_0000.<ending>`` (both ignored here), optionally
``scores.csv`` (``case,score,flagged``) and ``prediction.json`` (``voxel_threshold``, ``case_threshold``).
Label folder: ``case.<ending>``, a voxel is anomalous where the label is > 0. File endings are those of the
registered readers (``uadnet.imageio``); maps and labels may use different endings (e.g. ``.tif`` maps for
``.png`` labels). Results go to ``summary.json`` and ``per_case.csv`` (written atomically, no NaN: undefined
metrics are ``null`` / empty cells). Lesion-wise detection by size and per-group AP: ``lesion_wise``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from uadnet.evaluation import lesion_wise, metrics
from uadnet.imageio.base_reader_writer import Properties
from uadnet.imageio.geometry import grid_mismatch
from uadnet.imageio.reader_writer_registry import READER_WRITERS, reader_writer_for
from uadnet.inference.export import DERIVED, PREDICTION_FILE, SCORES_FILE
from uadnet.utilities.file_io import atomic_path, load_json, save_json

SUMMARY_FILE = "summary.json"
PER_CASE_FILE = "per_case.csv"
_BOOTSTRAPPED = ("ap", "auroc", "dice_at_threshold", "best_dice")
PER_CASE_COLUMNS = ("case", "anomalous", "score", "flagged", "num_voxels", "num_positive", "ap", "auroc",
                    "best_dice", "best_dice_threshold", "dice_at_threshold", "precision_at_threshold",
                    "recall_at_threshold", "fp_fraction_at_threshold", "tp", "fp", "fn", "lesions", "lesions_detected",
                    "fp_components", "map_file", "label_file")


class EvaluationError(ValueError):
    """The prediction and label folders do not fit together; the message names the files and the fix."""


def known_endings() -> list[str]:
    """All file endings of the registered readers, longest first (so ``.nii.gz`` is tried before ``.gz``)."""
    endings = {e.lower() for cls in READER_WRITERS.values() for e in cls.supported_file_endings}
    return sorted(endings, key=lambda e: (-len(e), e))


def split_ending(name: str) -> tuple[str, str] | None:
    """``("case", ".nii.gz")`` for ``"case.nii.gz"``; ``None`` when no registered reader knows the ending."""
    lower = name.lower()
    for e in known_endings():
        if lower.endswith(e) and len(name) > len(e):
            return name[:-len(e)], name[-len(e):]
    return None


def list_cases(folder: str | os.PathLike, skip_derived: bool = False) -> dict[str, Path]:
    """Map case id → file for the image files in ``folder`` (hidden files and unknown endings are ignored).

    With ``skip_derived``, ``*_mask.*``, ``*_restoration_XXXX.*`` and ``*_uncertainty.*`` files (predictor outputs) are
    left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder.")
    cases: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        split = split_ending(p.name)
        if split is None or (skip_derived and DERIVED.search(split[0])):
            continue
        case = split[0]
        if case in cases:
            raise EvaluationError(f"{cases[case]} and {p} are both case '{case}'; keep one file per case.")
        cases[case] = p
    return cases


def _read(path: Path) -> tuple[np.ndarray, Properties]:
    split = split_ending(path.name)
    if split is None:
        raise EvaluationError(f"{path}: unknown file ending; supported: {', '.join(known_endings())}.")
    return reader_writer_for(split[1]).read_seg(path)


def _finite_number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvaluationError(f"{where} is {value!r}; expected a finite number (or leave it out).")
    return float(value)


def resolve_thresholds(pred_folder: str | os.PathLike, threshold: float | None = None,
                       threshold_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """The voxel and case thresholds and where they came from.

    The voxel threshold is ``threshold`` if given, else ``voxel_threshold`` of ``threshold_from`` (default:
    ``pred_folder/prediction.json`` when it exists); the case threshold is ``case_threshold`` of that file.
    """
    file = Path(threshold_from) if threshold_from is not None else Path(pred_folder) / PREDICTION_FILE
    if threshold_from is not None and not file.is_file():
        raise EvaluationError(f"--threshold_from {file}: no such file. Give the prediction.json written by "
                              "uadnet_predict (or any JSON with 'voxel_threshold'), or use --threshold.")
    data: dict[str, Any] = {}
    if file.is_file():
        loaded = load_json(file)
        if not isinstance(loaded, dict):
            raise EvaluationError(f"{file}: expected a JSON object with 'voxel_threshold' and 'case_threshold'.")
        data = loaded
    if "voxel_threshold" not in data and isinstance(data.get("voxel_thresholds"), dict):
        rates = ", ".join(f"{r}: {t}" for r, t in data["voxel_thresholds"].items())
        raise EvaluationError(f"{file} is a fold's calibration.json: it holds one voxel threshold per false-positive "
                              f"rate ({rates}) for that fold's maps, not the 'voxel_threshold' of a prediction. Give "
                              "the prediction folder's prediction.json (the default), or pick one with --threshold.")
    voxel = _finite_number(data.get("voxel_threshold"), f"{file}: 'voxel_threshold'")
    case = _finite_number(data.get("case_threshold"), f"{file}: 'case_threshold'")
    out = {"voxel_threshold": voxel, "voxel_threshold_source": str(file) if voxel is not None else None,
           "case_threshold": case, "case_threshold_source": str(file) if case is not None else None}
    if threshold is not None:
        out["voxel_threshold"] = _finite_number(threshold, "--threshold")
        out["voxel_threshold_source"] = "--threshold"
    return out


_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n", ""}


def read_table(path: Path, error: type[Exception]) -> pd.DataFrame:
    """A CSV file as text cells (empty cells as ``""``); ``error`` naming the file when it is not a table."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise error(f"{path} is not a readable CSV table ({e}). Fix or delete it.") from e


def read_scores_csv(path: str | os.PathLike) -> dict[str, tuple[float, bool | None]]:
    """``case → (score, flagged)`` from a ``scores.csv`` with columns ``case,score[,flagged]``."""
    path = Path(path)
    table = read_table(path, EvaluationError)
    columns = list(table.columns)
    if "case" not in columns or "score" not in columns:
        raise EvaluationError(f"{path}: needs the columns 'case' and 'score' (found {columns}). Fix or delete "
                              "it (case scores then default to the mean of the top 1 % voxels).")
    out: dict[str, tuple[float, bool | None]] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        case = (row["case"] or "").strip()
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not case or not math.isfinite(score):
            raise EvaluationError(f"{path}, line {line}: expected a case name and a finite score, got "
                                  f"{row['case']!r}, {row['score']!r}.")
        if case in out:
            raise EvaluationError(f"{path}: case '{case}' appears twice; keep one row per case.")
        flagged: bool | None = None
        if "flagged" in columns:
            text = (row["flagged"] or "").strip().lower()
            if text not in _TRUE | _FALSE:
                raise EvaluationError(f"{path}, line {line}: flagged={row['flagged']!r}; expected 0/1 or "
                                      "true/false.")
            flagged = text in _TRUE
        out[case] = (score, flagged)
    return out


def _pair_cases(pred_folder: Path, label_folder: Path, allow_missing_labels: bool,
                note: Callable[[str], None]) -> list[tuple[str, Path, Path]]:
    maps = list_cases(pred_folder, skip_derived=True)
    labels = list_cases(label_folder)
    if not labels:
        raise EvaluationError(f"{label_folder}: no label files (endings: {', '.join(known_endings())}).")
    no_map = [labels[c] for c in labels if c not in maps]
    if no_map:
        listed = ", ".join(str(p) for p in no_map[:10]) + (f" and {len(no_map) - 10} more" if len(no_map) > 10 else "")
        raise EvaluationError(f"{len(no_map)} label(s) have no anomaly map in {pred_folder}: {listed}. Expected "
                              f"{pred_folder}/<case>.<ending> for each; predict the missing cases (uadnet_predict "
                              "skips finished ones with --continue_prediction) or remove their labels.")
    no_label = [maps[c] for c in maps if c not in labels]
    if no_label:
        listed = ", ".join(str(p) for p in no_label[:10]) + (f" and {len(no_label) - 10} more"
                                                             if len(no_label) > 10 else "")
        if not allow_missing_labels:
            raise EvaluationError(f"{len(no_label)} anomaly map(s) have no label in {label_folder}: {listed}. Add "
                                  f"{label_folder}/<case>.<ending> for each, or pass --allow_missing_labels to "
                                  "ignore them.")
        note(f"warning: ignoring {len(no_label)} anomaly map(s) without a label: {listed}")
    return [(c, maps[c], labels[c]) for c in sorted(labels)]


def load_groups(path: str | os.PathLike) -> dict[str, str]:
    """``case → group name`` from a JSON object of strings, or from the ``test_case_lesions`` object of a
    ``dataset.json`` (as the demo builders write it)."""
    path = Path(path)
    fix = ('give a JSON object mapping case to group name, e.g. {"test_000": "tumour", "test_003": "healthy"}, '
           "or a dataset.json with such an object under 'test_case_lesions'")
    if not path.is_file():
        raise EvaluationError(f"--groups {path}: no such file; {fix}.")
    try:
        data = load_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise EvaluationError(f"--groups {path}: not valid JSON ({e}); {fix}.") from None
    if isinstance(data, dict) and "test_case_lesions" in data:
        data = data["test_case_lesions"]
    if not isinstance(data, dict) or not all(isinstance(v, str) and v for v in data.values()):
        raise EvaluationError(f"--groups {path}: not a JSON object of non-empty strings; {fix}.")
    return data


def _load_case(map_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Read one map/label pair and check they share a grid; return float32 scores and bool labels, both
    ``(z, y, x)``, and the label's spacing (mm, ``(z, y, x)``)."""
    amap, map_props = _read(map_path)
    label, label_props = _read(label_path)
    if amap.shape[0] != 1:
        raise EvaluationError(f"{map_path}: {amap.shape[0]} channels; an anomaly map has exactly one.")
    diff = grid_mismatch(amap.shape[1:], map_props, label.shape[1:], label_props)
    if diff is not None:
        raise EvaluationError(
            f"{map_path} and {label_path} are not on the same grid ({diff}). The anomaly map must lie on the "
            "label's grid: predict from the original test images (uadnet_predict exports on the input grid), or "
            "resample the label onto the image grid (nearest neighbour).")
    if not np.isfinite(amap).all():
        raise EvaluationError(f"{map_path}: contains NaN or Inf; re-run the prediction for this case.")
    return amap[0].astype(np.float32, copy=False), (label > 0).any(axis=0), list(label_props["spacing"])


def _clean(obj: Any) -> Any:
    """NaN/Inf → None throughout (JSON has no NaN), numpy scalars → Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_per_case_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write the per-case rows atomically; undefined values are empty cells."""
    table = pd.DataFrame([[row.get(k) for k in PER_CASE_COLUMNS] for row in rows], columns=list(PER_CASE_COLUMNS),
                         dtype=object)  # object: whole numbers stay whole next to empty cells
    with atomic_path(path, ".csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")


def evaluate_folder(pred_folder: str | os.PathLike, label_folder: str | os.PathLike,
                    output_file: str | os.PathLike | None = None, threshold: float | None = None,
                    threshold_from: str | os.PathLike | None = None, num_bootstrap: int = 1000, seed: int = 0,
                    allow_missing_labels: bool = False, disable_progress_bar: bool = False,
                    verbose: bool = True, groups: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate every labelled case; write ``summary.json`` (default ``pred_folder/summary.json``) and
    ``per_case.csv`` beside it; return the summary. Notes and warnings are printed to stderr when ``verbose``.
    ``groups``: JSON file mapping case → group (lesion kind), see ``load_groups``; adds ``summary["groups"]``."""
    pred_folder, label_folder = Path(pred_folder), Path(label_folder)
    output_file = Path(output_file) if output_file is not None else pred_folder / SUMMARY_FILE
    if num_bootstrap < 0:
        raise EvaluationError(f"--num_bootstrap must be 0 or more, got {num_bootstrap}.")
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        if verbose:
            print(msg if msg.startswith("warning:") else f"note: {msg}", file=sys.stderr)

    pairs = _pair_cases(pred_folder, label_folder, allow_missing_labels, note)
    group_of = load_groups(groups) if groups is not None else None
    thr = resolve_thresholds(pred_folder, threshold, threshold_from)
    t_voxel, t_case = thr["voxel_threshold"], thr["case_threshold"]
    if t_voxel is None:
        note("no voxel threshold (no --threshold, no 'voxel_threshold' in prediction.json): Dice/precision/recall "
             "at the calibrated threshold are null. Best Dice (oracle), AP and AUROC are still computed.")
    scores_path = pred_folder / SCORES_FILE
    csv_scores = read_scores_csv(scores_path) if scores_path.is_file() else None
    if csv_scores is not None:
        missing = [c for c, _, _ in pairs if c not in csv_scores]
        if missing:
            raise EvaluationError(f"{scores_path}: no row for case(s) {', '.join(missing[:10])}. Re-run the "
                                  "prediction, or delete scores.csv to use the mean of the top 1 % voxels instead.")
        score_source = str(scores_path)
    else:
        score_source = f"mean of the top {100 * metrics.TOP_FRACTION:g} % voxels of each map"
        if t_case is not None:
            note(f"no {SCORES_FILE}: case scores are the {score_source}, which may not be on the scale of "
                 "'case_threshold'.")

    rows: list[dict[str, Any]] = []
    pooled_s: list[np.ndarray] = []
    pooled_y: list[np.ndarray] = []
    lesions: list[lesion_wise.CaseLesions] = []
    for case, map_path, label_path in tqdm(pairs, desc="evaluating", unit="case", disable=disable_progress_bar):
        s, y, spacing = _load_case(map_path, label_path)
        lesions.append(lesion_wise.case_lesions(s, y, spacing, t_voxel))
        s, y = s.ravel(), y.ravel()
        row: dict[str, Any] = {"case": case, "anomalous": int(y.any())}
        if csv_scores is not None:
            row["score"], row["flagged"] = csv_scores[case]
            if row["flagged"] is not None:
                row["flagged"] = int(row["flagged"])
        else:
            row["score"], row["flagged"] = metrics.top_fraction_mean(s), None
        row.update(metrics.case_metrics(s, y, t_voxel))
        row.update(lesions[-1].row())
        row["map_file"], row["label_file"] = str(map_path), str(label_path)
        rows.append(row)
        pooled_s.append(s)
        pooled_y.append(y)

    group_summary = None
    if group_of is not None:
        case_groups = [group_of.get(r["case"], lesion_wise.UNLISTED_GROUP) for r in rows]
        unlisted = [r["case"] for r in rows if r["case"] not in group_of]
        if unlisted:
            note(f"{len(unlisted)} case(s) not in {groups} are in group '{lesion_wise.UNLISTED_GROUP}': "
                 f"{', '.join(unlisted[:10])}{' ...' if len(unlisted) > 10 else ''}")
        group_summary = lesion_wise.group_summaries(case_groups, lesions, pooled_s, pooled_y, t_voxel,
                                                    [r["score"] for r in rows])
    s_all, y_all = metrics.pool(pooled_s, pooled_y)
    del pooled_s, pooled_y
    pooled: dict[str, Any] = {"num_voxels": int(s_all.size), "num_positive": int(np.count_nonzero(y_all))}
    pooled.update(metrics.ranking_metrics(s_all, y_all))  # ap, auroc, best_dice (+ its threshold): one sort
    del s_all, y_all
    if t_voxel is not None:  # the pooled confusion counts are the sums of the per-case ones
        tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
        at = metrics.dice_precision_recall(tp, fp, fn)
        pooled.update({"dice_at_threshold": at["dice"], "precision_at_threshold": at["precision"],
                       "recall_at_threshold": at["recall"], "tp": tp, "fp": fp, "fn": fn})
    else:
        pooled.update({k: None for k in ("dice_at_threshold", "precision_at_threshold", "recall_at_threshold",
                                         "tp", "fp", "fn")})
    if pooled["num_positive"] == 0:
        note("no label has an anomalous voxel: voxel AP, AUROC and Dice are undefined (null).")

    per_case = {k: metrics.bootstrap_ci([r[k] for r in rows], num_bootstrap, seed) for k in _BOOTSTRAPPED}
    flags = [r["flagged"] for r in rows]
    case_level = metrics.case_level_metrics([r["score"] for r in rows], [bool(r["anomalous"]) for r in rows],
                                            t_case, flags if all(f is not None for f in flags) else None)
    case_level["score_source"] = score_source
    if case_level["num_healthy"] == 0:
        note("no healthy test case (label without anomalous voxels): case-level AUROC/AP are undefined (null).")

    summary = _clean({
        "prediction_folder": str(pred_folder),
        "label_folder": str(label_folder),
        "num_cases": len(rows),
        "thresholds": thr,
        "pooled": pooled,
        "per_case_mean": per_case,
        "bootstrap": {"num_bootstrap": num_bootstrap, "seed": seed, "confidence": 0.95, "resampled": "cases"},
        "case_level": case_level,
        "lesion_wise": lesion_wise.summarize(lesions, t_voxel),
        "groups_file": None if groups is None else str(groups),
        "groups": group_summary,
        "notes": notes,
        "cases": [{k: r.get(k) for k in PER_CASE_COLUMNS} for r in rows],
    })
    per_case_csv = output_file.parent / PER_CASE_FILE
    write_per_case_csv(summary["cases"], per_case_csv)
    save_json(summary, output_file)
    summary["files"] = {"summary": str(output_file), "per_case": str(per_case_csv)}
    return summary
