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
thresholds and healthy case scores only), so the averaged map is not recalibrated to exactly ``--fpr``; that would
need every member's healthy validation cases scored again. Instead: ``map >= T`` implies that some member is at or
above its own threshold, so on healthy data the ensemble's mask flags at most the sum of the members' false-positive
rates (``K · fpr`` for ``K`` members; exactly ``fpr`` when the members agree), and a healthy case is flagged at most
``K`` times as often as by one member. ``prediction.json`` states this. Members with the same thresholds (e.g. a
folder with itself) are averaged with weights exactly 1: the ensemble equals the member bit for bit.

Cases are the finished ones (``per_case/<case>.json``); every member must hold the same cases, on the same grid,
predicted at the same ``--fpr``. Restorations are not averaged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from uadnet.utilities.file_io import load_json, save_json

RULE = "map = mean_i(m_i * T / t_i), score = mean_i(s_i * C / c_i); T, C = means of the members' thresholds"


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


def ensemble_case(members: Sequence[Member], case: str, voxel_threshold: float, case_threshold: float
                  ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``(map, score, properties)`` of one case: the members' rescaled maps and scores averaged (module docstring),
    computed in float64; ``EnsembleError`` naming both files when a member's map lies on another grid."""
    total, props, first = None, None, None
    for m in members:
        amap, p = _read_map(m.maps[case], case)
        if total is None:
            total, props, first = np.zeros(amap.shape, np.float64), p, m.maps[case]
        elif (diff := grid_mismatch(amap.shape, p, total.shape, props)) is not None:
            raise EnsembleError(f"case {case}: {m.maps[case]} and {first} are not on the same grid ({diff}); the "
                                "members must be predictions of the same input images")
        total += amap.astype(np.float64) * (voxel_threshold / m.voxel_threshold)
    score = float(np.mean([m.records[case]["score"] * (case_threshold / m.case_threshold) for m in members]))
    return (total / len(members)).astype(np.float32), score, props


def ensemble_folders(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, progress_bar: bool = True) -> int:
    """Average the member folders ``inputs`` into ``output`` (maps, masks, ``per_case/``, ``scores.csv``,
    ``prediction.json``, every file written atomically, each case's record last); returns the case count."""
    members = [load_member(f) for f in inputs]
    out = Path(output).resolve()
    cases = check_members(members, out)
    if len({m.folder for m in members}) < len(members):
        print("note: a folder is given more than once; it weighs that many times")
    T = float(np.mean([m.voxel_threshold for m in members]))
    C = float(np.mean([m.case_threshold for m in members]))
    ending = _map_file(members[0].folder, cases[0])[1]
    writer = reader_writer_for(ending)
    fpr = members[0].info.get("fpr")
    out.mkdir(parents=True, exist_ok=True)
    save_json({
        "method": "ensemble", "voxel_threshold": T, "case_threshold": C, "fpr": fpr, "rule": RULE,
        "members": [{"folder": str(m.folder), "voxel_threshold": m.voxel_threshold,
                     "case_threshold": m.case_threshold, **{k: m.info.get(k) for k in (
                         "method", "configuration", "folds", "fold", "model_folder", "fpr")}} for m in members],
        "thresholds": {"calibrated_false_positive_rate": None,
                       "healthy_voxel_false_positive_rate_at_most": None if fpr is None else len(members) * fpr,
                       "why": "each member is rescaled to the mean threshold T; map >= T implies a member at or above "
                              "its own threshold (union bound); not recalibrated: healthy validation maps are not "
                              "stored"},
        "uadnet_version": __version__}, out / PREDICTION_FILE)
    for case in tqdm(cases, desc="ensembling", unit="case", disable=not progress_bar):
        t0 = time.perf_counter()
        outputs = case_outputs(out, case, ending)
        start_case(outputs)
        amap, score, props = ensemble_case(members, case, T, C)
        write_map_and_mask(writer, amap, props, outputs, T)
        first = members[0].records[case]
        record = case_record(Case(case, [Path(n) for n in first.get("inputs", [])], []), amap, score, T, C,
                             {"ensemble": time.perf_counter() - t0})
        record["members"] = [{"folder": str(m.folder), "score": m.records[case]["score"]} for m in members]
        save_json(record, outputs["record"])
    return write_scores_csv(out, cases)
