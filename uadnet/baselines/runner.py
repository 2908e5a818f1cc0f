"""Run a baseline over a folder of raw cases and write the predictor's output folder (``uadnet_baseline``).

Fit (z-score: the healthy fold-0 'train' cases) and calibrate (both: the healthy fold-0 'val' cases) on the
dataset's raw training images listed in ``splits_final.json``, read and normalised exactly like the test
cases (foreground from the image, as at prediction: mask files are not used, so healthy and test cases are
treated alike). Then score every case of the input folder and write maps, masks, ``per_case/``, ``scores.csv``
and ``prediction.json`` through ``uadnet.inference.export``, so ``uadnet_evaluate`` and ``uadnet_plot_overlays``
read the folder unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from uadnet import __version__, paths
from uadnet.baselines import intensity, zscore
from uadnet.baselines.common import (
    BaselineError,
    calibrate_baseline,
    channel_signs,
    check_grid,
    reference_split,
    without_clipping,
)
from uadnet.dataset.raw_dataset import Case, RawDataset
from uadnet.imageio import reader_writer_class
from uadnet.inference import export
from uadnet.inference.folder_runner import FolderRun, run_folder
from uadnet.plans import SPLITS_FILE, Plans
from uadnet.scoring.calibration import FALSE_POSITIVE_RATES

BASELINES = ("intensity", "zscore")
STATISTICS_FILE = "zscore_statistics.npz"  # in the output folder, with zscore_statistics.json beside it


@dataclass
class BaselineSettings:
    input_folder: Path
    output_folder: Path
    dataset: str | int
    baseline: str = "intensity"
    configuration: str | None = None  # intensity baseline: the preprocessing configuration (default: the plans')
    plans_name: str = paths.DEFAULT_PLANS_NAME
    fold: int = 0  # fit on this fold's 'train' cases, calibrate on its 'val' cases
    fpr: float = 0.01
    clip: bool = False  # True: clip normalised intensities at 1 as the plans do for the networks (ties bright voxels)
    num_parts: int = 1
    part_id: int = 0
    continue_prediction: bool = False
    progress_bar: bool = True
    output_format: str = "uadnet"  # or "mood": the MOOD challenge's layout (uadnet.inference.mood)


class BaselineRunner:
    """Reads the plans, splits and raw training cases; :meth:`fit` fits and calibrates, :meth:`predict_folder`
    fits (if needed) and writes the output folder."""

    def __init__(self, settings: BaselineSettings) -> None:
        if settings.baseline not in BASELINES:
            raise BaselineError(f"unknown baseline '{settings.baseline}'; use one of {', '.join(BASELINES)}")
        if str(settings.fpr) not in {str(r) for r in FALSE_POSITIVE_RATES}:
            raise BaselineError(f"--fpr {settings.fpr} is not calibrated; use one of "
                                f"{', '.join(str(r) for r in FALSE_POSITIVE_RATES)}")
        self.s = settings
        self.dataset_name = paths.resolve_dataset_name(settings.dataset)
        pre = paths.preprocessed_folder() / self.dataset_name
        plans_file = pre / f"{settings.plans_name}.json"
        if not plans_file.is_file():
            raise FileNotFoundError(f"{plans_file} does not exist: the baselines use the plans and splits of a planned "
                                    f"dataset; run uadnet_plan_and_preprocess -d {settings.dataset} first")
        self.plans = Plans.load(plans_file)
        # the plans' normalisation ranges, by default without the clipping at 1 (see without_clipping)
        self.scoring_plans = self.plans if settings.clip else without_clipping(self.plans)
        self.config_name = settings.configuration or self.plans.default_configuration
        self.plans.configuration(self.config_name)  # a helpful error for an unknown configuration
        self.train_ids, self.val_ids = reference_split(pre / SPLITS_FILE, settings.fold)
        raw_folder = paths.raw_folder() / self.dataset_name
        if not (raw_folder / "dataset.json").is_file():
            raise FileNotFoundError(f"{raw_folder / 'dataset.json'} is missing: the baselines fit and calibrate on the "
                                    "raw healthy training images (imagesTr) of the dataset")
        self.raw = RawDataset(raw_folder)
        self.file_ending = self.plans.file_ending  # the reader the cases were preprocessed with, from the plans
        self.reader = reader_writer_class(self.plans.file_ending, self.plans.image_reader_writer)()
        self.output_ending = self.reader.output_file_ending(self.file_ending)
        self.channel_names = [self.plans.channel_names[str(i)] for i in range(len(self.plans.channel_names))]
        self.signs = channel_signs(self.channel_names)
        self.stats: zscore.ZScoreStatistics | None = None
        self.calibration: dict[str, Any] | None = None
        self.reference: tuple[tuple[int, ...], dict[str, Any], Path] | None = None  # shape, properties, file

    # ------------------------------------------------------------------------------------------- one case
    def _read(self, case: Case, check_grid_against_reference: bool) -> tuple[np.ndarray, dict[str, Any]]:
        export.check_channels(case, self.plans.channel_names, self.file_ending, BaselineError,
                              f"the {self.s.baseline} baseline")
        image, props = export.read_case(self.reader, case, self.plans.channel_names, BaselineError)
        if check_grid_against_reference:
            if self.reference is None:
                self.reference = (image.shape[1:], props, case.images[0])
            else:
                check_grid(image.shape[1:], props, self.reference[0], self.reference[1], case.images[0],
                           self.reference[2])
        return image, props

    def score_case(self, image: np.ndarray, properties: dict[str, Any]) -> dict[str, Any]:
        """``map`` on the input grid, ``score`` and ``seconds`` of one case (the z-score baseline: fit first)."""
        if self.s.baseline == "intensity":
            return intensity.score_case(image, properties, self.scoring_plans, self.config_name, self.signs)
        if self.stats is None:
            raise BaselineError("the z-score baseline is not fitted: call fit() first")
        return zscore.score_case(image, self.scoring_plans, self.stats, self.signs)

    # ---------------------------------------------------------------------------------- fit and calibrate
    def fit(self) -> dict[str, Any]:
        """Fit (z-score) on the fold's 'train' cases and calibrate on its 'val' cases; returns the calibration."""
        cases = self.raw.training_cases()
        missing = [c for c in self.train_ids + self.val_ids if c not in cases]
        if missing:
            raise BaselineError(f"{', '.join(missing[:5])} of {SPLITS_FILE} not in {self.raw.folder / 'imagesTr'}: "
                                f"re-run uadnet_plan_and_preprocess -d {self.s.dataset}")
        zscore_baseline = self.s.baseline == "zscore"
        bar = tqdm(total=(len(self.train_ids) if zscore_baseline else 0) + len(self.val_ids), unit="case",
                   desc=f"fitting the {self.s.baseline} baseline", disable=not self.s.progress_bar)
        if zscore_baseline:
            def normalised_training_images():
                for c in self.train_ids:
                    image, _ = self._read(cases[c], True)
                    yield zscore.normalize_on_input_grid(image, self.scoring_plans)[0]
                    bar.update()
            self.stats = zscore.fit_zscore(normalised_training_images())
        maps, foregrounds = [], []
        for c in self.val_ids:
            image, props = self._read(cases[c], zscore_baseline)
            result = self.score_case(image, props)
            # calibrate on the grid the case score is computed on: preprocessed (intensity) or input (z-score)
            maps.append(result["map"] if zscore_baseline else result["preprocessed_map"])
            foregrounds.append(result["foreground"])
            bar.update()
        bar.close()
        self.calibration = calibrate_baseline(maps, foregrounds)
        self.calibration["cases"] = list(self.val_ids)
        achieved = self.calibration["achieved_false_positive_rates"][str(self.s.fpr)]
        if achieved > 1.5 * self.s.fpr:
            print(f"WARNING: {100 * achieved:.2g} % of the healthy validation foreground voxels reach the "
                  f"{self.s.fpr:g}-false-positive-rate threshold (many tie at it"
                  + (", e.g. intensities clipped at 1" if self.s.clip else "") + "): the mask flags more than stated")
        return self.calibration

    @property
    def voxel_threshold(self) -> float:
        return float(self.calibration["voxel_thresholds"][str(self.s.fpr)])

    @property
    def case_threshold(self) -> float:
        return float(self.calibration["case_threshold"])

    # ----------------------------------------------------------------------------------------- the folder
    writes_restoration = False

    def read(self, case: Case) -> tuple[np.ndarray, dict[str, Any]]:
        """An input case (z-score: checked against the reference grid)."""
        return self._read(case, self.s.baseline == "zscore")

    def prediction_json(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "method": f"baseline_{self.s.baseline}", "dataset": self.dataset_name, "plans_name": self.s.plans_name,
            "configuration": self.config_name if self.s.baseline == "intensity" else None, "fold": self.s.fold,
            "fpr": self.s.fpr, "voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold,
            "voxel_thresholds": self.calibration["voxel_thresholds"],
            "calibration": {k: self.calibration[k] for k in ("achieved_false_positive_rates",
                                                             "case_threshold_quantile", "case_score",
                                                             "healthy_case_scores", "num_cases", "num_voxels",
                                                             "cases")},
            "normalization": {"ranges": "the plans' (per case, per channel: low → 0, high → 1)",
                              "clipped_at_1": self.s.clip},
            "channel_signs": dict(zip(self.channel_names, (int(s) for s in self.signs))),
            "uadnet_version": __version__, "plans_uadnet_version": self.plans.uadnet_version,
            "settings": {k: str(v) for k, v in asdict(self.s).items()}}
        if self.stats is not None:
            info.update({"reference_cases": list(self.train_ids), "std_floor": self.stats.std_floor,
                         "statistics_file": STATISTICS_FILE})
        return info

    def predict_folder(self) -> int:
        """Fit, calibrate, score every case of the input folder (this shard); returns 0, or 1 if a case failed."""
        _, out = export.check_folders(self.s.input_folder, self.s.output_folder, BaselineError)  # before fitting
        if self.calibration is None:
            self.fit()
        print(f"{self.s.baseline} baseline: "
              + (f"fitted on {len(self.train_ids)} healthy case(s), " if self.stats is not None else "")
              + f"calibrated on {len(self.val_ids)} healthy validation case(s) of fold {self.s.fold}: voxel threshold "
              f"{self.voxel_threshold:.4g} ({self.s.fpr:g} false-positive rate), case threshold "
              f"{self.case_threshold:.4g}")
        if self.stats is not None:
            out.mkdir(parents=True, exist_ok=True)
            zscore.save_statistics(self.stats, out / STATISTICS_FILE,
                                   {"dataset": self.dataset_name, "reference_cases": list(self.train_ids),
                                    "channel_names": self.channel_names, "axes": "c, z, y, x (input grid)",
                                    "units": "normalised intensity (plans' low → 0, high → 1)"})
        run = FolderRun(self.s.input_folder, self.s.output_folder, self.s.num_parts, self.s.part_id,
                        self.s.continue_prediction, self.s.progress_bar, f"{self.s.baseline} baseline",
                        output_format=self.s.output_format)
        return run_folder(
            self, run, error=BaselineError,
            summary=lambda o: f"maps, masks (threshold {self.voxel_threshold:.4g} at {self.s.fpr:g} false-positive "
                              f"rate on healthy validation data) in {o}")
