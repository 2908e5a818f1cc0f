"""Overlay figures of predicted anomaly maps on their input images, and an HTML report of all cases.

Folders (as ``uadnet_predict`` writes them):

- input: ``<case>_XXXX.<ending>``, one file per channel (nnU-Net naming); only channel ``_0000`` is drawn;
- prediction: ``<case>.<ending>`` float anomaly map on the input grid, ``<case>_mask.<ending>`` binary mask,
  optionally ``<case>_restoration_0000.<ending>``, ``scores.csv`` and ``prediction.json``;
- labels (optional): ``<case>.<ending>``, anomalous where > 0.

Arrays are ``(z, y, x)`` (rows y, columns x of slice z, the file's slice axis); spacing is in mm, ``(z, y, x)`` order.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import find_contours
from tqdm import tqdm

from uadnet.evaluation.evaluator import (
    known_endings,
    list_cases,
    read_scores_csv,
    read_table,
    resolve_thresholds,
    split_ending,
)
from uadnet.imageio.base_reader_writer import DUMMY_SLICE_SPACING
from uadnet.imageio.reader_writer_registry import reader_writer_for
from uadnet.inference.export import DERIVED, MASK_SUFFIX, RESTORATION_SUFFIX, SCORES_FILE
from uadnet.utilities.file_io import load_json
from uadnet.visualization.figures import plt, save_figure
from uadnet.visualization.report_page import PER_CASE_METRICS, fmt_value, report_html, write_text

REPORT_FILE = "report.html"
MASK_COLOUR, LABEL_COLOUR = "cyan", "lime"
MAP_CMAP = "inferno"
MAP_ALPHA = 0.6
MAP_VISIBLE_FRACTION = 0.05  # map values below min + this fraction of the range are drawn transparent
PER_CASE_COLUMNS = ("score", "flagged", "anomalous", *PER_CASE_METRICS)  # read from --per_case when present
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


class OverlayError(ValueError):
    """The folders do not fit together; the message names the files/folder and the fix."""


@dataclass
class CaseFiles:
    """The files of one case: the channel-0 input image, the anomaly map and the optional extras."""

    case: str
    image: Path
    amap: Path
    mask: Path | None = None
    restoration: Path | None = None
    label: Path | None = None


@dataclass
class CaseData:
    """One case loaded: ``(z, y, x)`` float32 arrays (bool for masks) and spacing ``(z, y, x)`` mm."""

    case: str
    image: np.ndarray
    amap: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None = None
    restoration: np.ndarray | None = None
    label: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)  # score, flagged, per-case metrics for the title


def find_cases(input_folder: str | os.PathLike, pred_folder: str | os.PathLike,
               label_folder: str | os.PathLike | None = None) -> list[CaseFiles]:
    """Pair every anomaly map in ``pred_folder`` with its channel-0 input image (and mask, restoration, label).

    Raises ``OverlayError`` when there are no maps or a map has no ``<case>_0000.<ending>`` input. A missing
    mask, restoration or label only leaves that panel/contour out.
    """
    input_folder, pred_folder = Path(input_folder), Path(pred_folder)
    preds = list_cases(pred_folder)
    maps = {s: p for s, p in preds.items() if not DERIVED.search(s)}
    if not maps:
        raise OverlayError(f"prediction folder {pred_folder} holds no anomaly maps (<case>.<ending>, endings "
                           f"{', '.join(known_endings())}). Run uadnet_predict -i INPUT -o {pred_folder} first, or "
                           "pass the folder it wrote with -p.")
    inputs: dict[str, Path] = {}
    for stem, path in list_cases(input_folder).items():
        m = _CHANNEL.match(stem)
        if m and m.group(2) == "0000":
            inputs[m.group(1)] = path
    labels = list_cases(Path(label_folder)) if label_folder is not None else {}
    missing = [c for c in maps if c not in inputs]
    if missing:
        listed = ", ".join(str(maps[c]) for c in missing[:10]) + (f" and {len(missing) - 10} more"
                                                                  if len(missing) > 10 else "")
        raise OverlayError(f"{len(missing)} anomaly map(s) have no input image in {input_folder}: {listed}. "
                           f"Expected {input_folder}/<case>_0000.<ending> for each (nnU-Net naming); pass the "
                           "folder given to uadnet_predict -i.")
    return [CaseFiles(c, inputs[c], maps[c], preds.get(f"{c}{MASK_SUFFIX}"), preds.get(f"{c}{RESTORATION_SUFFIX}"),
                      labels.get(c)) for c in sorted(maps)]


def _read(path: Path, seg: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    split = split_ending(path.name)
    assert split is not None  # only files with known endings are listed
    rw = reader_writer_for(split[1])
    return rw.read_seg(path) if seg else rw.read_images([path])


def load_case(files: CaseFiles, voxel_threshold: float | None = None) -> CaseData:
    """Read one case (channel 0 of image and restoration); check every file lies on the image's grid.

    Without a mask file the mask is ``map >= voxel_threshold`` when a threshold is given.
    """
    image, props = _read(files.image)
    amap, _ = _read(files.amap)
    shape = image.shape[1:]

    def check(arr: np.ndarray, path: Path) -> None:
        if arr.shape[1:] != shape:
            raise OverlayError(f"{path}: size (z, y, x) {arr.shape[1:]} differs from the input image {files.image} "
                               f"{shape}. Predictions must lie on the input grid: pass the input folder given to "
                               "uadnet_predict -i (and the matching labels), or re-run the prediction.")

    check(amap, files.amap)
    if amap.shape[0] != 1:
        raise OverlayError(f"{files.amap}: {amap.shape[0]} channels; an anomaly map has exactly one.")
    data = CaseData(files.case, image[0], np.nan_to_num(amap[0]), tuple(float(s) for s in props["spacing"]))
    if files.restoration is not None:
        rest, _ = _read(files.restoration)
        check(rest, files.restoration)
        data.restoration = rest[0]
    if files.mask is not None:
        mask, _ = _read(files.mask, seg=True)
        check(mask, files.mask)
        data.mask = (mask > 0).any(axis=0)
    elif voxel_threshold is not None:
        data.mask = data.amap >= voxel_threshold
    if files.label is not None:
        label, _ = _read(files.label, seg=True)
        check(label, files.label)
        data.label = (label > 0).any(axis=0)
    return data


def pick_slices(amap: np.ndarray, num_slices: int) -> list[int]:
    """Indices of the ``num_slices`` z slices (axis 0 of ``(z, y, x)``) with the largest map sum, ascending.

    Ties go to the lower index; fewer are returned when the volume has fewer slices.
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be at least 1, got {num_slices}")
    sums = np.nan_to_num(amap.reshape(amap.shape[0], -1).astype(np.float64).sum(axis=1), nan=-np.inf)
    order = np.argsort(-sums, kind="stable")
    return sorted(int(i) for i in order[:num_slices])


def intensity_window(image: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentile of ``image`` (a non-empty window even for constant images)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def case_title(case: str, info: dict[str, Any]) -> str:
    """``case — score 0.123, flagged yes — AP 0.4, Dice@thr 0.3`` with whatever ``info`` holds."""
    parts = [case]
    head = []
    if "score" in info:
        head.append(f"score {fmt_value(info['score'])}")
    if "flagged" in info:
        head.append(f"flagged {fmt_value(info['flagged'])}")
    if head:
        parts.append(", ".join(head))
    metrics = [f"{name} {fmt_value(info[k])}" for k, name in PER_CASE_METRICS.items() if k in info]
    if metrics:
        parts.append(", ".join(metrics))
    return " — ".join(parts)


def _contours(ax: plt.Axes, mask: np.ndarray, colour: str, linewidth: float) -> None:
    """Outline ``mask`` (y, x); padded so that regions touching the border are closed too."""
    for c in find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
        ax.plot(c[:, 1] - 1, c[:, 0] - 1, color=colour, linewidth=linewidth)


def render_case(data: CaseData, num_slices: int = 3, voxel_threshold: float | None = None,
                panel_inches: float = 3.0) -> plt.Figure:
    """One row per picked slice: image, restoration (if any), map overlay with colorbar, mask/label contours.

    The grey window (1st-99th percentile of the image volume) is shared by image and restoration; the map's colour
    scale runs from its minimum to its maximum (at least ``voxel_threshold``, which is marked on the colorbar).
    Pixels are drawn ``spacing_y / spacing_x`` times as tall as wide.
    """
    slices = pick_slices(data.amap, num_slices)
    vmin, vmax = intensity_window(data.image)
    mlo, mhi = float(data.amap.min()), float(data.amap.max())
    if voxel_threshold is not None:  # the scale reaches the threshold: a healthy case does not look bright
        mhi = max(mhi, voxel_threshold)
    if mhi <= mlo:
        mhi = mlo + 1.0
    visible = mlo + MAP_VISIBLE_FRACTION * (mhi - mlo)
    sy, sx = data.spacing[1], data.spacing[2]
    aspect = sy / sx
    ny, nx = data.image.shape[1:]
    height = float(np.clip(panel_inches * ny * sy / (nx * sx), 1.2, 3 * panel_inches))
    cols = ["image"] + (["restoration"] if data.restoration is not None else []) + ["anomaly map", "contours"]
    fig, axes = plt.subplots(len(slices), len(cols), squeeze=False,
                             figsize=(panel_inches * len(cols) + 0.8, height * len(slices) + 0.7))
    grey = {"cmap": "gray", "vmin": vmin, "vmax": vmax, "aspect": aspect, "interpolation": "nearest"}
    two_d = data.image.shape[0] == 1 and data.spacing[0] >= DUMMY_SLICE_SPACING
    contour_names = ([f"mask ({MASK_COLOUR})"] if data.mask is not None else []) + \
        ([f"label ({LABEL_COLOUR})"] if data.label is not None else [])
    for row, z in zip(axes, slices):
        for ax, name in zip(row, cols):
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "restoration":
                ax.imshow(data.restoration[z], **grey)
            else:
                ax.imshow(data.image[z], **grey)
            if name == "anomaly map":
                m = data.amap[z]
                im = ax.imshow(np.ma.masked_where(m <= visible, m), cmap=MAP_CMAP, vmin=mlo, vmax=mhi,
                               alpha=MAP_ALPHA, aspect=aspect, interpolation="nearest")
                cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                cbar.solids.set_alpha(1.0)
                if voxel_threshold is not None and mlo <= voxel_threshold <= mhi:
                    cbar.ax.axhline(voxel_threshold, color=MASK_COLOUR, linewidth=1.5)
            elif name == "contours":
                if data.label is not None:  # wider and below the mask, so both stay visible where they agree
                    _contours(ax, data.label[z], LABEL_COLOUR, 2.4)
                if data.mask is not None:
                    _contours(ax, data.mask[z], MASK_COLOUR, 1.2)
                ax.set_xlim(-0.5, nx - 0.5)
                ax.set_ylim(ny - 0.5, -0.5)
            title = (", ".join(contour_names) or "no mask") if name == "contours" else name
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel("2D" if two_d else f"z = {z}", fontsize=9)
    fig.suptitle(case_title(data.case, data.info), fontsize=10)
    return fig


def read_per_case_csv(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``case → {column: value}`` for the columns of ``PER_CASE_COLUMNS`` present (floats, ``None`` for empty
    cells; ``anomalous`` and ``flagged`` as bools)."""
    path = Path(path)
    if not path.is_file():
        raise OverlayError(f"--per_case {path}: no such file. Give the per_case.csv written by uadnet_evaluate.")
    table = read_table(path, OverlayError)
    if "case" not in table.columns:
        raise OverlayError(f"{path}: needs a 'case' column (found {list(table.columns)}); give uadnet_evaluate's "
                           "per_case.csv.")
    wanted = [c for c in PER_CASE_COLUMNS if c in table.columns]
    out: dict[str, dict[str, Any]] = {}
    for row in table.to_dict("records"):
        values: dict[str, Any] = {}
        for c in wanted:
            try:
                values[c] = float(row[c]) if (row[c] or "").strip() else None
            except ValueError:
                values[c] = None
        for c in ("anomalous", "flagged"):
            if values.get(c) is not None:
                values[c] = bool(values[c])
        out[(row["case"] or "").strip()] = values
    return out


def plot_overlays(input_folder: str | os.PathLike, pred_folder: str | os.PathLike, output_folder: str | os.PathLike,
                  label_folder: str | os.PathLike | None = None, num_slices: int = 3,
                  summary_file: str | os.PathLike | None = None, per_case_file: str | os.PathLike | None = None,
                  disable_progress_bar: bool = False) -> Path:
    """Write ``output_folder/<case>.png`` for every anomaly map and ``output_folder/report.html``; return the
    report's path."""
    if num_slices < 1:
        raise OverlayError(f"--num_slices must be at least 1, got {num_slices}.")
    pred_folder, output_folder = Path(pred_folder), Path(output_folder)
    for name, folder in (("input", input_folder), ("prediction", pred_folder), ("label", label_folder)):
        if folder is not None and output_folder.resolve() == Path(folder).resolve():
            raise OverlayError(f"-o {output_folder} is the {name} folder; the PNGs would be read as images next "
                               f"time. Choose another folder, e.g. {pred_folder / 'overlays'}.")
    cases = find_cases(input_folder, pred_folder, label_folder)
    summary = None
    if summary_file is not None:
        if not Path(summary_file).is_file():
            raise OverlayError(f"--summary {summary_file}: no such file. Give the summary.json written by "
                               "uadnet_evaluate, or leave the option out.")
        summary = load_json(summary_file)
    per_case = read_per_case_csv(per_case_file) if per_case_file is not None else {}
    scores = read_scores_csv(pred_folder / SCORES_FILE) if (pred_folder / SCORES_FILE).is_file() else {}
    threshold = resolve_thresholds(pred_folder)["voxel_threshold"]
    if label_folder is not None:
        unlabelled = [c.case for c in cases if c.label is None]
        if unlabelled:
            print(f"warning: {len(unlabelled)} case(s) have no label in {label_folder} (no ground-truth contour): "
                  f"{', '.join(unlabelled[:10])}", file=sys.stderr)
    rows = []
    for files in tqdm(cases, desc="plotting", unit="case", disable=disable_progress_bar):
        info = {k: v for k, v in per_case.get(files.case, {}).items() if v is not None or k in PER_CASE_METRICS}
        if files.case in scores:  # the predictor's own scores win over the copy in per_case.csv
            info["score"], flagged = scores[files.case]
            if flagged is not None:
                info["flagged"] = flagged
        data = load_case(files, threshold)
        data.info = {k: v for k, v in info.items() if k != "anomalous"}
        png = f"{files.case}.png"
        save_figure(render_case(data, num_slices, threshold), output_folder / png)
        rows.append({"case": files.case, "png": png, **info})
    report = output_folder / REPORT_FILE
    write_text(report_html(rows, f"uadnet anomaly maps: {pred_folder.name or pred_folder}", summary), report)
    return report

