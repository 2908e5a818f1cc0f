"""The prediction output folder, shared by ``uadnet_predict`` and the training-free baselines (``uadnet_baseline``).

Per case: ``<case><ending>`` float32 anomaly map and ``<case>_mask<ending>`` uint8 mask (map >= voxel threshold),
both on the exact input grid, optionally ``<case>_restoration_0000<ending>`` and ``<case>_uncertainty<ending>``
(``--save_uncertainty``, :mod:`uadnet.inference.uncertainty`), and ``per_case/<case>.json`` (written last: a case is
finished when it exists). For the folder: ``scores.csv`` (case, score, flagged) and ``prediction.json`` (at least
``voxel_threshold`` and ``case_threshold``). Everything is written atomically; the input folder is never written
to. With ``--output_format mood`` the maps and masks are replaced by the MOOD challenge's ``pixel/`` and ``sample/``
files (``uadnet.inference.mood``); ``uadnet_ensemble`` writes this layout from averaged folders
(``uadnet.inference.ensemble``).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uadnet.dataset.raw_dataset import Case, channel_files_problem, check_read_channels
from uadnet.imageio import BaseReaderWriter, ImageReadError, require_finite
from uadnet.utilities.file_io import atomic_path, load_json

PER_CASE = "per_case"
SCORES_FILE = "scores.csv"
PREDICTION_FILE = "prediction.json"
MASK_SUFFIX, RESTORATION_SUFFIX, UNCERTAINTY_SUFFIX = "_mask", "_restoration_0000", "_uncertainty"
OPTIONAL_OUTPUTS = ("restoration", "uncertainty")  # written only when asked (save_restorations, save_uncertainty)
# a case name ending so is an output beside a map, not a map
DERIVED = re.compile(r"(_mask|_restoration_\d{4}|_uncertainty)$")


def case_outputs(output_folder: Path, case: str, output_ending: str) -> dict[str, Path]:
    """The files of one case: ``map``, ``mask``, ``restoration`` and ``uncertainty`` (optional outputs) and
    ``record``."""
    out = Path(output_folder)
    return {"map": out / f"{case}{output_ending}", "mask": out / f"{case}{MASK_SUFFIX}{output_ending}",
            "restoration": out / f"{case}{RESTORATION_SUFFIX}{output_ending}",
            "uncertainty": out / f"{case}{UNCERTAINTY_SUFFIX}{output_ending}",
            "record": out / PER_CASE / f"{case}.json"}


def start_case(outputs: dict[str, Path]) -> None:
    """Before a case is (re)computed: remove its record (the case is not finished until it is rewritten) and any
    temporary file a killed run left behind for its outputs (``atomic_path`` names them ``.<name>.*``)."""
    outputs["record"].unlink(missing_ok=True)
    for path in outputs.values():
        if path.parent.is_dir():
            for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
                stale.unlink(missing_ok=True)


def output_name_collisions(cases: Sequence[str]) -> list[str]:
    """``"a ↔ b"`` for every pair of cases whose output files (``case_outputs``) would share a name, also on a
    case-insensitive file system (e.g. ``test_000`` and ``test_000_mask``, or ``Case`` and ``case``)."""
    owner: dict[str, str] = {}
    found: dict[tuple[str, str], str] = {}
    for case in sorted(cases):
        for name in (f"{case}", f"{case}{MASK_SUFFIX}", f"{case}{RESTORATION_SUFFIX}", f"{case}{UNCERTAINTY_SUFFIX}",
                     f"{PER_CASE}/{case}"):
            other = owner.setdefault(name.lower(), case)
            if other != case:
                found.setdefault((other, case), f"{other} ↔ {case} (both would write {name}…)")
    return list(found.values())


def check_folders(input_folder: str | os.PathLike, output_folder: str | os.PathLike,
                  error: type[Exception] = ValueError) -> tuple[Path, Path]:
    """Resolved ``(input, output)``; ``FileNotFoundError`` without the input folder, ``error`` when the output
    folder is the input folder or lies inside it."""
    inp, out = Path(input_folder).resolve(), Path(output_folder).resolve()
    if not inp.is_dir():
        raise FileNotFoundError(f"input folder {inp} does not exist")
    if inp == out or inp in out.parents:
        raise error(f"the output folder {out} must not be the input folder or inside it: prediction "
                    "never writes next to the inputs")
    return inp, out


def check_channels(case: Case, channel_names: dict[str, str], file_ending: str,
                   error: type[Exception] = ValueError, expected_by: str = "the model") -> None:
    """Raise ``error`` unless the case's channel files fit ``channel_names`` (one file per channel, or one
    ``_0000`` file holding all channels: ``raw_dataset.channel_files_problem``); ``expected_by`` names who
    expects them in the message."""
    if (problem := channel_files_problem(case, channel_names, file_ending)) is not None:
        raise error(f"{problem}, as {expected_by} expects")


def read_case(reader: BaseReaderWriter, case: Case, channel_names: dict[str, str],
              error: type[Exception] = ValueError) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a case's image ``(c, z, y, x)`` and properties for scoring; ``error`` naming the file when the number
    of channels read differs from ``channel_names``, when it holds NaN/Inf, or when a channel is constant (an
    empty scan cannot be scored and must not be reported as healthy)."""
    image, props = reader.read_images(case.images)
    try:
        check_read_channels(case, image, channel_names)
        require_finite(image, case.images)
    except (ValueError, ImageReadError) as e:
        raise error(str(e)) from None
    flat = image.reshape(image.shape[0], -1)
    if flat.shape[1] == 0 or (constant := np.flatnonzero(flat.min(1) == flat.max(1))).size:
        value = "" if flat.shape[1] == 0 else f" (every voxel {float(flat[constant[0], 0]):g})"
        files = ", ".join(p.name for p in case.images)
        raise error(f"{files}: channel {0 if flat.shape[1] == 0 else int(constant[0])} is empty or constant{value}; "
                    "an empty scan cannot be scored, so the case is not reported (check the file)")
    return image, props


def write_map_and_mask(reader: BaseReaderWriter, amap: np.ndarray, properties: dict[str, Any],
                       outputs: dict[str, Path], voxel_threshold: float) -> None:
    """Write the float32 map (z, y, x) and its uint8 mask (map >= ``voxel_threshold``) on the reader's grid."""
    reader.write(amap.astype(np.float32), outputs["map"], properties)
    reader.write((amap >= voxel_threshold).astype(np.uint8), outputs["mask"], properties)


def case_record(case: Case, amap: np.ndarray, score: float, voxel_threshold: float, case_threshold: float,
                seconds: dict[str, float]) -> dict[str, Any]:
    """The ``per_case/<case>.json`` record: score, flag (score >= case threshold), thresholds, the number of
    voxels at or above the voxel threshold, timings (s) and the input file names."""
    return {"case": case.identifier, "score": score, "flagged": score >= case_threshold,
            "voxel_threshold": voxel_threshold, "case_threshold": case_threshold,
            "anomalous_voxels": int((amap >= voxel_threshold).sum()), "seconds": seconds,
            "inputs": [p.name for p in case.images]}


def write_scores_csv(output_folder: Path, cases: Sequence[str]) -> int:
    """``scores.csv`` from the records of the given cases that are finished; returns the row count. Records of
    cases not in ``cases`` (no longer in the input folder) are left out."""
    folder = Path(output_folder) / PER_CASE
    records = [load_json(folder / f"{c}.json") for c in sorted(cases) if (folder / f"{c}.json").is_file()]
    table = pd.DataFrame({"case": [r["case"] for r in records], "score": [f"{r['score']:.6g}" for r in records],
                          "flagged": [int(r["flagged"]) for r in records]}, columns=["case", "score", "flagged"])
    with atomic_path(Path(output_folder) / SCORES_FILE, ".csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8")
    return len(records)
