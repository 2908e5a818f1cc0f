"""Intensity thresholding: the normalised intensity itself is the anomaly score (the known strong baseline for
hyperintense lesions, e.g. on FLAIR).

The image goes through the same preprocessing as every trained method (``preprocess_case``: crop to the
foreground, per-channel normalisation, resampling to the configuration's spacing), so scores are in normalised
intensity units: 0 is the plans' ``low`` of the case's channel and its ``high`` is ``high_maps_to`` (e.g. the 0th
and 98th foreground percentile → 0 and 0.7 for MRI). The runner passes plans without the clipping at 1
(``common.without_clipping``), so the brightest voxels keep their order above 1; with the plans as they are,
scores lie in [0, 1]. The map is brought
back to the input grid like the predictor's (``revert_preprocessing``, linear), and the case score is computed on
the preprocessed grid, as in prediction and calibration.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from uadnet.plans import Plans
from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing
from uadnet.scoring.calibration import case_score


def intensity_score(data: np.ndarray, foreground: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Voxel scores ``(z, y, x)`` float32 of a normalised image ``data`` ``(c, z, y, x)`` (normalised intensity
    units, [0, 1] when clipped).

    Score = max over the hyperintense channels (``signs`` +1) of the intensity; when no channel is hyperintense,
    the max over all channels of ``1 − x`` (darkness). 0 outside ``foreground`` ``(z, y, x)`` (bool).
    """
    data = np.asarray(data, np.float32)
    signs = np.asarray(signs)
    if data.ndim != 4 or signs.shape != (data.shape[0],):
        raise ValueError(f"expected data (c, z, y, x) and one sign per channel, got {data.shape} and {signs.shape}")
    bright = signs > 0
    score = data[bright].max(axis=0) if bright.any() else (1.0 - data).max(axis=0)
    return np.where(np.asarray(foreground, bool), score, 0.0).astype(np.float32)


def score_case(image: np.ndarray, properties: dict[str, Any], plans: Plans, configuration: str,
               signs: np.ndarray) -> dict[str, Any]:
    """Score one case read by the dataset's reader (``image`` ``(c, z, y, x)``), preprocessed with ``plans`` and
    ``configuration``.

    Returns ``map`` ``(z, y, x)`` float32 on the input grid, ``score`` (case score on the preprocessed grid),
    ``preprocessed_map`` and ``foreground`` on the preprocessed grid (what calibration uses) and ``seconds``.
    """
    t0 = time.perf_counter()
    pre = preprocess_case(image, properties, plans, configuration)
    t1 = time.perf_counter()
    score = intensity_score(pre.data, pre.foreground, signs)
    t2 = time.perf_counter()
    amap = revert_preprocessing(score, pre.properties, plans, order=1)
    return {"map": amap, "score": case_score(score, pre.foreground), "preprocessed_map": score,
            "foreground": pre.foreground,
            "seconds": {"preprocessing": t1 - t0, "scoring": t2 - t1, "export": time.perf_counter() - t2}}
