"""MOOD-challenge output (``uadnet_predict --output_format mood``): the layout of the Medical Out-of-Distribution
Analysis Challenge (MICCAI; evaluation code: github.com/MIC-DKFZ/mood, ``scripts/evalresults.py``).

Per case ``<case><ending>`` (``<case>_0000<ending>`` read as input):

- ``pixel/<case><ending>``: float32 voxel scores in [0, 1] on the exact input grid (the pixel-level task);
- ``sample/<case><ending>.txt``: one float in [0, 1] (the sample-level task);
- ``per_case/<case>.json``: the usual record (raw score, thresholds), written last: the case is finished when it
  exists, so ``--continue_prediction`` works as in the default layout.

MOOD's own inputs are ``<name>.nii.gz``; given to uadnet as ``<name>_0000.nii.gz`` they come back as
``pixel/<name>.nii.gz`` and ``sample/<name>.nii.gz.txt``, the names the challenge's evaluation looks for.

The mapping to [0, 1] (:func:`squash`) is ``p = 0.5 + 0.5 · d / (1 + |d|)`` with ``d = (s − t) / |t|``: ``s`` the
voxel score (case score), ``t`` the calibrated voxel threshold at ``--fpr`` (the case threshold). It is strictly
increasing, so the ranking of voxels and cases (hence pixel- and sample-level AP) is unchanged up to the rounding to
float32; ``p = 0.5`` at the calibrated threshold, and ``p >= 0.5`` exactly for the voxels the default layout's mask
holds (the cases it flags); ``s = 0`` gives 0.25, ``s = 2t`` 0.75, ``s = 10t`` 0.95. Its tail approaches 1 like
``1/s``, not like ``e^−s`` as a logistic would: the challenge reads maps as float16 (spacing 2^−11 just below 1), where
a logistic of the same slope at ``t`` ties every voxel above ``s ≈ 5 t`` at 1.0, this mapping only those above
``s ≈ 2000 t``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from uadnet.imageio import BaseReaderWriter
from uadnet.inference.export import PER_CASE
from uadnet.utilities.file_io import atomic_path

OUTPUT_FORMATS = ("uadnet", "mood")
PIXEL, SAMPLE = "pixel", "sample"
MAPPING = "0.5 + 0.5 * d / (1 + |d|), d = (s - t) / |t|"


def squash(values: np.ndarray | float, threshold: float) -> np.ndarray:
    """Scores (any real values, the map's units) → (0, 1), strictly increasing, 0.5 at ``threshold`` (module
    docstring). Computed in float64; a threshold of 0 uses the scale 1."""
    scale = abs(float(threshold)) or 1.0
    d = (np.asarray(values, np.float64) - float(threshold)) / scale
    return 0.5 + 0.5 * d / (1.0 + np.abs(d))


def mood_outputs(output_folder: Path, case: str, output_ending: str) -> dict[str, Path]:
    """The files of one case in the MOOD layout: ``pixel``, ``sample`` and ``record``."""
    out = Path(output_folder)
    name = f"{case}{output_ending}"
    return {"pixel": out / PIXEL / name, "sample": out / SAMPLE / f"{name}.txt", "record": out / PER_CASE / f"{case}.json"}


def write_mood_case(reader: BaseReaderWriter, amap: np.ndarray, score: float, properties: dict[str, Any],
                    outputs: dict[str, Path], voxel_threshold: float, case_threshold: float) -> float:
    """Write the [0, 1] pixel map (float32, the reader's grid) and the sample score text file; returns the sample
    score written. A value is >= 0.5 exactly where the uadnet layout's mask (``map >= threshold``) or flag (``score
    >= case threshold``) would be set, also where rounding to float32 would otherwise land on 0.5."""
    pixel = squash(amap, voxel_threshold).astype(np.float32)
    above = amap >= voxel_threshold  # the mask's rule (export.write_map_and_mask)
    half, below = np.float32(0.5), np.nextafter(np.float32(0.5), np.float32(0))
    reader.write(np.where(above, np.maximum(pixel, half), np.minimum(pixel, below)), outputs["pixel"], properties)
    sample = float(squash(score, case_threshold))
    sample = max(sample, 0.5) if score >= case_threshold else min(sample, float(np.nextafter(0.5, 0.0)))
    with atomic_path(outputs["sample"], ".txt") as tmp:
        tmp.write_text(f"{sample!r}\n", encoding="utf-8")  # repr: read back exactly
    return sample


def mapping_record(voxel_threshold: float, case_threshold: float) -> dict[str, Any]:
    """What ``prediction.json`` says about the MOOD layout and its mapping to [0, 1]."""
    return {"layout": {"pixel": f"{PIXEL}/<case><ending>", "sample": f"{SAMPLE}/<case><ending>.txt"},
            "mapping": MAPPING, "pixel_t": voxel_threshold, "sample_t": case_threshold,
            "note": "strictly increasing (AP unchanged); 0.5 = the calibrated threshold"}
