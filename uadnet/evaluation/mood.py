"""``uadnet_evaluate --mood``: the two metrics of the MOOD challenge (Medical Out-of-Distribution Analysis
Challenge, MICCAI), computed as its evaluation code does (github.com/MIC-DKFZ/mood, ``scripts/evalresults.py``).

- **pixel-level AP**: ``sklearn.metrics.average_precision_score`` over all voxels of all cases pooled; voxel scores
  are read as float16 and clipped to [0, 1], labels rounded to the nearest integer, a voxel is abnormal where that
  is >= 1 (the challenge's rules; for integer labels the same as ``> 0``).
- **sample-level AP**: the same over cases: a case's label is 1 when it has any abnormal voxel (or, with MOOD's
  own label folder, the integer in ``sample/<name>.txt``), its score the float in the prediction's
  ``sample/<name>.txt``, clipped to [0, 1].

Prediction folder: ``pixel/<case><ending>`` and ``sample/<case><ending>.txt`` (``uadnet_predict --output_format
mood``). Label folder: uadnet's (``<case><ending>``, e.g. ``labelsTs``) or MOOD's (``pixel/<name>`` and optionally
``sample/<name>.txt``). The challenge scores a missing prediction as all zeros; here it is an error naming the file,
so a forgotten case is not silently a bad score. Labels are iterated, as in the challenge: maps without a label are
left out (with a note).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from uadnet.evaluation.evaluator import EvaluationError, _read, list_cases, split_ending
from uadnet.imageio.geometry import grid_mismatch
from uadnet.inference.mood import PIXEL, SAMPLE
from uadnet.utilities.file_io import save_json

MOOD_SUMMARY_FILE = "mood_summary.json"


def challenge_scores(values: np.ndarray) -> np.ndarray:
    """Voxel scores as the challenge reads them: float16, clipped to [0, 1] (its ``get_fdata(dtype=np.float16)``
    and ``np.clip``)."""
    return np.clip(np.asarray(values).astype(np.float16), 0.0, 1.0)


def challenge_labels(values: np.ndarray) -> np.ndarray:
    """Boolean abnormal voxels as the challenge reads labels: rounded to the nearest integer, then >= 1."""
    return np.rint(np.asarray(values, np.float64)) >= 1


def mood_ap(scores: list[np.ndarray], labels: list[np.ndarray]) -> float | None:
    """Average precision of the pooled, flattened ``scores`` against ``labels`` (bool); ``None`` without any
    positive (the challenge's metric is undefined there)."""
    y = np.concatenate([np.asarray(a, bool).ravel() for a in labels])
    if not y.any():
        return None
    s = np.concatenate([np.asarray(a).ravel() for a in scores])
    return float(average_precision_score(y, s))


def _text_files(folder: Path) -> dict[str, Path]:
    """``case → file`` for ``<case><ending>.txt`` files of ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(".txt") and not p.name.startswith("."):
            split = split_ending(p.name[:-len(".txt")])
            if split is not None:
                out[split[0]] = p
    return out


def _read_number(path: Path, kind: type) -> float:
    """The number on the first line of a MOOD text file (``int`` labels, ``float`` scores)."""
    with open(path, encoding="utf-8") as f:
        text = f.readline().strip()
    try:
        value = kind(text)
    except ValueError:
        raise EvaluationError(f"{path}: expected one {kind.__name__} on the first line, got {text!r}. Fix the "
                              "file or predict the case again.") from None
    if not np.isfinite(value):
        raise EvaluationError(f"{path}: {text!r} is not a finite number; predict the case again.")
    return float(value)


def evaluate_mood(pred_folder: str | os.PathLike, label_folder: str | os.PathLike,
                  output_file: str | os.PathLike | None = None, disable_progress_bar: bool = False,
                  verbose: bool = True) -> dict[str, Any]:
    """Pixel- and sample-level AP of a MOOD-layout prediction folder (module docstring); writes the summary JSON
    (default ``pred_folder/mood_summary.json``) and returns it."""
    pred, labels_root = Path(pred_folder), Path(label_folder)
    if not (pred / PIXEL).is_dir():
        raise EvaluationError(f"{pred} has no {PIXEL}/ folder: it is not a MOOD prediction folder. Write one with "
                              "uadnet_predict ... --output_format mood, or evaluate uadnet's layout without --mood.")
    mood_labels = (labels_root / PIXEL).is_dir()
    label_files = list_cases(labels_root / PIXEL if mood_labels else labels_root)
    if not label_files:
        raise EvaluationError(f"{labels_root}: no label files.")
    sample_labels = _text_files(labels_root / SAMPLE) if mood_labels else {}
    maps, samples = list_cases(pred / PIXEL), _text_files(pred / SAMPLE)
    missing = [str(pred / PIXEL / f"{c}{split_ending(p.name)[1]}") for c, p in label_files.items() if c not in maps]
    missing += [f"{pred / SAMPLE}/{c}<ending>.txt" for c in label_files if c not in samples]
    if missing:
        raise EvaluationError(f"{len(missing)} prediction file(s) missing: {', '.join(missing[:10])}"
                              f"{' ...' if len(missing) > 10 else ''}. The challenge would score them as 0; predict "
                              "the missing cases (uadnet_predict --output_format mood --continue_prediction).")
    notes = []
    if extra := sorted(set(maps) - set(label_files)):
        notes.append(f"{len(extra)} map(s) without a label left out: {', '.join(extra[:10])}")
        if verbose:
            print(f"note: {notes[-1]}", file=sys.stderr)
    pixel_scores, pixel_labels, rows = [], [], []
    for case in tqdm(sorted(label_files), desc="MOOD evaluation", unit="case", disable=disable_progress_bar):
        amap, map_props = _read(maps[case])
        label, label_props = _read(label_files[case])
        if amap.shape[0] != 1:
            raise EvaluationError(f"{maps[case]}: {amap.shape[0]} channels; a pixel-level map has exactly one.")
        if (diff := grid_mismatch(amap.shape[1:], map_props, label.shape[1:], label_props)) is not None:
            raise EvaluationError(f"{maps[case]} and {label_files[case]} are not on the same grid ({diff}); the "
                                  "challenge needs the input's geometry: predict from the original images.")
        y = challenge_labels(label).any(axis=0)
        pixel_scores.append(challenge_scores(amap[0]).ravel())
        pixel_labels.append(y.ravel())
        anomalous = (int(_read_number(sample_labels[case], int)) if case in sample_labels else int(y.any()))
        score = float(np.clip(_read_number(samples[case], float), 0.0, 1.0))
        rows.append({"case": case, "anomalous": anomalous, "sample_score": score, "num_positive": int(y.sum()),
                     "pixel_file": str(maps[case]), "sample_file": str(samples[case]),
                     "label_file": str(label_files[case])})
    summary = {
        "prediction_folder": str(pred), "label_folder": str(labels_root), "num_cases": len(rows),
        "num_anomalous_cases": sum(r["anomalous"] for r in rows),
        "num_voxels": int(sum(s.size for s in pixel_scores)),
        "num_positive_voxels": int(sum(int(y.sum()) for y in pixel_labels)),
        "pixel_ap": mood_ap(pixel_scores, pixel_labels),
        "sample_ap": mood_ap([np.array([r["sample_score"]]) for r in rows],
                             [np.array([r["anomalous"] >= 1]) for r in rows]),
        "definition": "MOOD challenge (MIC-DKFZ/mood scripts/evalresults.py): average_precision_score over pooled "
                      "voxels (scores as float16, clipped to [0, 1]; labels rint >= 1) and over cases",
        "sample_labels": "sample/<name>.txt of the label folder" if sample_labels else "any abnormal voxel",
        "notes": notes, "cases": rows,
    }
    output_file = Path(output_file) if output_file is not None else pred / MOOD_SUMMARY_FILE
    save_json(summary, output_file)
    summary["files"] = {"summary": str(output_file)}
    return summary
