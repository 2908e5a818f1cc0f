"""Training-free baselines evaluated like the trained methods (GitHub issue 6).

``intensity``: the normalised intensity of the hyperintense channels is the anomaly score.
``zscore``: voxel-wise z-score against the healthy training population (images on one registered grid).

Both are fitted/calibrated on the healthy fold-0 cases of ``splits_final.json`` (never on test data) and write the
predictor's output folder (``uadnet_baseline``; ``uadnet.baselines.runner``). Arrays are ``(c, z, y, x)``.
"""

from uadnet.baselines.common import BaselineError, calibrate_baseline, channel_signs, check_grid, reference_split
from uadnet.baselines.intensity import intensity_score
from uadnet.baselines.zscore import STD_FLOOR, ZScoreStatistics, fit_zscore, normalize_on_input_grid, zscore_map

__all__ = [
    "STD_FLOOR",
    "BaselineError",
    "ZScoreStatistics",
    "calibrate_baseline",
    "channel_signs",
    "check_grid",
    "fit_zscore",
    "intensity_score",
    "normalize_on_input_grid",
    "reference_split",
    "zscore_map",
]
