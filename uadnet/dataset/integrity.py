"""Check a raw dataset folder before planning: report every problem at once, each with the file and a fix.

Checked: ``dataset.json`` and its reader; folder layout and file names; ``numTraining``; that every case has
all channels; per image file: readable, finite, not empty/all zero/constant, one dimensionality (2D or 3D)
for all cases, all channels on one grid; ``masksTr`` masks and ``labelsTs`` labels: readable, on their image's
grid, binary (0/1, or 0/255 for PNG & co). ``labelsTr/`` of nnU-Net datasets is ignored.
Values are checked as the reader returns them: SimpleITK's NIfTI reader already turns NaN/Inf into 0.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uadnet.dataset.dataset_json import DatasetJsonError, load_dataset_json
from uadnet.dataset.raw_dataset import CaseListing, list_cases, one_file_holds_all_channels
from uadnet.imageio import DUMMY_SLICE_SPACING, BaseReaderWriter, reader_writer_for
from uadnet.imageio.geometry import grid_mismatch
from uadnet.utilities.parallel import parallel_map

DOC = "See documentation/dataset_format.md"


@dataclass(frozen=True)
class IntegrityProblem:
    """One problem: the offending file or folder (relative to the dataset folder), what is wrong, the fix."""

    file: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem.rstrip('.')}. Fix: {self.fix}"


class DatasetIntegrityError(RuntimeError):
    """The dataset has problems; ``.problems`` holds all of them and the message lists them, one per line."""

    def __init__(self, dataset_folder: str | os.PathLike, problems: list[IntegrityProblem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"dataset {dataset_folder} has {len(self.problems)} integrity problem(s):\n{lines}")


@dataclass(frozen=True)
class _CaseTask:
    """Everything a worker needs to check one case (picklable under spawn)."""

    root: str
    identifier: str
    images: tuple[str, ...]
    channel_indices: tuple[int, ...]
    channel_names: tuple[str, ...]
    file_ending: str
    reader: BaseReaderWriter
    mask: str | None
    is_label: bool  # labelsTs (may be empty: healthy case) rather than masksTr


Result = tuple[list[IntegrityProblem], tuple[str, int] | None]  # problems, (file of channel 0, 2 or 3 for 2D/3D)


def _try_read(read: Callable[[Any], tuple[np.ndarray, dict]], arg: Any, path: str) -> tuple[Any, Any, str | None]:
    """``read(arg)`` as ``(array, props, None)``, or ``(None, None, error)`` for any exception."""
    try:
        arr, props = read(arg)
        return np.asarray(arr), props, None
    except Exception as e:  # noqa: BLE001 -- readers raise many types; all mean "unreadable"
        msg = str(e) or type(e).__name__
        return None, None, msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def _grid_mismatch(a: dict, a_shape: tuple, b: dict, b_shape: tuple) -> str | None:
    """How the grid of ``b`` differs from that of ``a`` (:func:`uadnet.imageio.geometry.grid_mismatch`)."""
    return grid_mismatch(a_shape, a, b_shape, b)


def _intensity_problems(arr: np.ndarray) -> list[tuple[str, str]]:
    """NaN/Inf, no voxels, all zero, constant: as ``(problem, fix)``."""
    replace = "replace the file with the correct image, or remove the case"
    if arr.size == 0:
        return [("holds 0 voxels", replace)]
    out = []
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        out.append((f"contains {n_nan} NaN and {arr.size - int(finite.sum()) - n_nan} Inf values",
                    "replace NaN/Inf with valid intensities (e.g. np.nan_to_num) and save the image again"))
        arr = arr[finite]
        if arr.size == 0:
            return out
    lo, hi = arr.min(), arr.max()
    if lo == hi == 0:
        out.append(("is all zero (empty image)", replace))
    elif lo == hi:
        out.append((f"is constant (every voxel is {float(lo):g})", replace))
    return out


def _mask_problems(arr: np.ndarray, props: dict, is_label: bool) -> list[tuple[str, str]]:
    """Single channel, binary values, non-empty (masks only): as ``(problem, fix)``."""
    what = "label" if is_label else "mask"
    if arr.shape[0] != 1:
        return [(f"holds {arr.shape[0]} channels", f"save the {what} as a single-channel (grey) image")]
    bad = (arr != 0) & (arr != 1)
    if "natural" in props and bad.any():
        bad255 = (arr != 0) & (arr != 255)
        bad = bad if bad255.any() else bad255
    if bad.any():
        vals = np.unique(arr[bad])
        shown = ", ".join(f"{v:g}" for v in vals[:5]) + (", ..." if len(vals) > 5 else "")
        allowed = "0 and 1 (or 0 and 255 for PNG)" if "natural" in props else "0 and 1"
        return [(f"is not binary: holds the value(s) {shown}; expected only {allowed}",
                 f"store the {what} as 0 = background / 1 = {'anomaly' if is_label else 'foreground'}, "
                 "e.g. (array > 0).astype(np.uint8)" + ("; merge all anomaly classes into 1" if is_label else ""))]
    if not is_label and not arr.any():
        fix = ("the mask marks the body/foreground region: give a non-empty mask or delete the file (without a "
               "mask the foreground is derived from the image)")
        return [("is empty (all zero)", fix)]
    return []


def _check_case(t: _CaseTask) -> Result:
    """Read every file of one case once and check it. Module level so that spawned workers can pickle it."""
    root = Path(t.root)
    problems: list[IntegrityProblem] = []

    def add(file: str | Path, problem: str, fix: str) -> None:
        problems.append(IntegrityProblem(Path(file).relative_to(root).as_posix(), problem, fix))

    n = len(t.channel_names)
    ref: tuple[str, dict, tuple] | None = None  # first readable channel file: path, props, (z, y, x)
    n_read: dict[int, int] = {}  # channel index -> channels the file holds
    for path, idx in zip(t.images, t.channel_indices):
        arr, props, err = _try_read(t.reader.read_images, [path], path)
        if err is not None:
            add(path, f"cannot be read: {err}", f"replace it with a valid {t.file_ending} image (re-export or "
                "convert it), or remove the case")
            continue
        n_read[idx] = arr.shape[0]
        for problem, fix in _intensity_problems(arr):
            add(path, problem, fix)
        if ref is None:
            ref = (path, props, arr.shape[1:])
        elif (diff := _grid_mismatch(ref[1], ref[2], props, arr.shape[1:])) is not None:
            add(path, f"geometry differs from channel file {Path(ref[0]).name} ({diff}; that file first)",
                "all channels of a case must share one grid: resample this channel onto the first channel "
                "(or fix its header if only spacing/origin/direction are wrong)")

    # channels: files _0000 .. _{n-1} with one channel each, or a single _0000 holding all n (RGB)
    if not (one_file_holds_all_channels(t.channel_indices, n) and n_read.get(0) in (None, n)):
        folder = Path(t.images[0]).parent
        for i in sorted(set(range(n)) - set(t.channel_indices)):
            add(folder / f"{t.identifier}_{i:04d}{t.file_ending}", f"missing (channel '{t.channel_names[i]}')",
                f"add the file; every case needs one file per channel in dataset.json channel_names "
                f"({', '.join(t.channel_names)}), or remove the case")
        for path, idx in zip(t.images, t.channel_indices):
            if idx >= n:
                add(path, f"channel index {idx}, but dataset.json channel_names lists only {n} channel(s)",
                    "remove the file or add the channel to channel_names in dataset.json")
            elif n_read.get(idx, 1) != 1:
                add(path, f"holds {n_read[idx]} channels; expected one channel per file ({n} in channel_names)",
                    "store one channel per file, or for one RGB file per case list exactly its channels in "
                    "channel_names (e.g. {\"0\": \"R\", \"1\": \"G\", \"2\": \"B\"})")

    if t.mask is not None:
        arr, props, err = _try_read(t.reader.read_seg, t.mask, t.mask)
        if err is not None:
            add(t.mask, f"cannot be read: {err}", f"replace it with a valid {t.file_ending} file or delete it")
        else:
            if ref is not None and (diff := _grid_mismatch(ref[1], ref[2], props, arr.shape[1:])) is not None:
                add(t.mask, f"grid does not match its image {Path(ref[0]).name} ({diff}; image first)",
                    "resample it onto the image grid with nearest-neighbour interpolation (or copy the image's "
                    "spacing/origin/direction if only the header is wrong)")
            for problem, fix in _mask_problems(arr, props, t.is_label):
                add(t.mask, problem, fix)

    dim = None if ref is None else (2 if ref[1]["spacing"][0] == DUMMY_SLICE_SPACING else 3)
    return problems, None if dim is None else (Path(ref[0]).relative_to(root).as_posix(), dim)


def _listing_problems(root: Path, images: str, masks: str, listing: CaseListing,
                      ending: str) -> list[IntegrityProblem]:
    """Misnamed files, files with another ending, masks/labels without an image."""
    out = []
    for name in (images, masks):
        if (root / name).is_dir():
            for p in sorted((root / name).iterdir()):
                if not p.name.startswith(".") and not p.name.lower().endswith(ending.lower()):
                    out.append(IntegrityProblem(f"{name}/{p.name}", f"does not end with the file_ending '{ending}' "
                                                "of dataset.json, so it is ignored",
                                                f"convert it to {ending} or move it out of {name}/"))
    for p in listing.unmatched:
        stem = p.name[: -len(ending)]
        out.append(IntegrityProblem(f"{images}/{p.name}", f"name does not follow <case>_<cccc>{ending} (a 4-digit "
                                    "channel index after the case name)", f"rename it, e.g. to {stem}_0000{ending}"))
    for p in listing.orphan_masks:
        out.append(IntegrityProblem(f"{masks}/{p.name}", f"has no image in {images}/ (expected "
                                    f"{images}/{p.name[: -len(ending)]}_0000{ending})",
                                    "add the image or delete the file; names must match the image's case name"))
    return out


def _dimension_problems(dims: list[tuple[str, int]]) -> list[IntegrityProblem]:
    """Cases whose dimensionality (2D/3D) differs from the majority."""
    counts = Counter(d for _, d in dims)
    if len(counts) < 2:
        return []
    major, n = counts.most_common(1)[0]
    return [IntegrityProblem(f, f"is {d}D, but {n} of {len(dims)} cases are {major}D",
                             f"all cases must be {major}D: convert this case or remove it") for f, d in dims if d != major]


def verify_dataset_integrity(dataset_folder: str | os.PathLike, num_processes: int = 1,
                             disable_progress_bar: bool = False) -> list[IntegrityProblem]:
    """All problems of a raw dataset folder (empty list: fine). Files are read in ``num_processes`` workers."""
    root = Path(dataset_folder)
    if not root.is_dir():
        return [IntegrityProblem(str(root), "dataset folder does not exist", "check the path / dataset id")]
    try:
        dj = load_dataset_json(root)
    except (DatasetJsonError, OSError) as e:
        return [IntegrityProblem("dataset.json", str(e), f"write a valid dataset.json. {DOC}")]
    ending, names = dj["file_ending"], tuple(dj["channel_names"].values())
    problems: list[IntegrityProblem] = []
    try:
        reader: BaseReaderWriter | None = reader_writer_for(ending, dj.get("overwrite_image_reader_writer"))
    except ValueError as e:
        problems.append(IntegrityProblem("dataset.json", str(e), "set file_ending / overwrite_image_reader_writer "
                                         "to a supported format, or convert the images"))
        reader = None

    train = list_cases(root / "imagesTr", ending, root / "masksTr")
    if not (root / "imagesTr").is_dir():
        problems.append(IntegrityProblem("imagesTr", "folder does not exist",
                                         f"create imagesTr/ holding the training cases as <case>_0000{ending}. {DOC}"))
    elif not train.cases:
        problems.append(IntegrityProblem("imagesTr", f"holds no training cases (<case>_<cccc>{ending})",
                                         f"put the healthy training cases there. {DOC}"))
    if dj["numTraining"] != len(train.cases):
        problems.append(IntegrityProblem("dataset.json", f"numTraining is {dj['numTraining']}, but imagesTr holds "
                                         f"{len(train.cases)} cases", f"set numTraining to {len(train.cases)}"))
    test = list_cases(root / "imagesTs", ending, root / "labelsTs")
    problems += _listing_problems(root, "imagesTr", "masksTr", train, ending)
    problems += _listing_problems(root, "imagesTs", "labelsTs", test, ending)
    if (root / "labelsTs").is_dir():
        if not (root / "imagesTs").is_dir():
            problems.append(IntegrityProblem("labelsTs", "exists, but imagesTs does not",
                                             "add the test images in imagesTs/ or delete labelsTs/"))
        for case in test.cases.values():
            if case.mask is None:
                problems.append(IntegrityProblem(f"labelsTs/{case.identifier}{ending}", "missing (labelsTs exists, "
                                                 "so every test case needs a label)",
                                                 "add an all-zero label for healthy test cases"))
    if reader is None:
        return problems

    tasks = [_CaseTask(str(root), c.identifier, tuple(map(str, c.images)), tuple(c.channel_indices), names, ending,
                       reader, None if c.mask is None else str(c.mask), is_label)
             for listing, is_label in ((train, False), (test, True)) for c in listing.cases.values()]
    results: list[Result] = parallel_map(_check_case, tasks, num_processes, "Checking dataset integrity",
                                         names=[Path(t.images[0]).parent.name + "/" + t.identifier for t in tasks],
                                         disable_progress_bar=disable_progress_bar)
    for case_problems, _ in results:
        problems += case_problems
    problems += _dimension_problems([d for _, d in results if d is not None])
    return problems


def check_dataset_integrity(dataset_folder: str | os.PathLike, num_processes: int = 1,
                            disable_progress_bar: bool = False) -> None:
    """Raise ``DatasetIntegrityError`` listing every problem, if there is any."""
    problems = verify_dataset_integrity(dataset_folder, num_processes, disable_progress_bar)
    if problems:
        raise DatasetIntegrityError(dataset_folder, problems)
