"""Prediction: raw cases → preprocessing (the training function) → sliding-window scores per fold → fold mean →
postprocessing → inverse preprocessing → anomaly map, mask, restoration, case score on the exact input grid.

Output folder (see ``documentation/how_to_use.md``): ``case<ending>`` float32 map, ``case_mask<ending>`` binary
at the calibrated threshold, ``case_restoration_0000<ending>`` with ``save_restorations``, ``scores.csv``,
``prediction.json`` and ``per_case/case.json`` (written last for each case: a case is finished when it exists).
2D natural images come back as ``.tif`` maps and masks of the same size. The folder is written by
``uadnet.inference.export``, shared with the training-free baselines (``uadnet_baseline``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from uadnet import paths
from uadnet.dataset.raw_dataset import Case
from uadnet.imageio import reader_writer_class
from uadnet.inference import export
from uadnet.inference.model_loading import TrainedFold, available_folds, load_fold, load_plans_and_dataset_json
from uadnet.methods import build_method
from uadnet.plans import PLANS_FILE
from uadnet.postprocessing import apply_postprocessing
from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing
from uadnet.scoring.calibration import case_score, case_score_as_calibrated
from uadnet.scoring.scorers import score_volume
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import load_json, save_json
from uadnet.utilities.torch_utils import resolve_device

PER_CASE = export.PER_CASE


class PredictionError(RuntimeError):
    pass


@dataclass
class PredictionSettings:
    input_folder: Path
    output_folder: Path
    dataset: str | int
    configuration: str | None = None
    method: str = "cold_ensemble"
    plans_name: str = paths.DEFAULT_PLANS_NAME
    folds: list[str] | None = None  # None: every fold with a final checkpoint
    checkpoint: str = ckpt.FINAL
    save_restorations: bool = False
    num_parts: int = 1
    part_id: int = 0
    continue_prediction: bool = False
    device: str | None = None  # None: the plans' compute.device (auto: the best available)
    step_size: float | None = None
    precision: str | None = None
    fpr: float = 0.01
    progress_bar: bool = True
    model_folder: Path | None = None  # overrides dataset/method/plans/configuration lookup
    extra: dict = field(default_factory=dict)


def model_folder_for(dataset: str | int, method: str, plans_name: str, configuration: str | None) -> Path:
    """``UADNET_RESULTS/<dataset>/<method>__<plans>__<configuration>``; the configuration defaults to the plans'
    default (read from the results folder, so prediction works without the preprocessed folder)."""
    name = paths.resolve_dataset_name(dataset)
    root = paths.results_folder() / name
    if configuration is None:
        candidates = sorted(root.glob(paths.model_folder_name(method, plans_name, "*")))
        if not candidates:
            raise FileNotFoundError(f"no trained {method} model for {name} in {root}: run uadnet_train first")
        plans = load_json(candidates[0] / PLANS_FILE) if (candidates[0] / PLANS_FILE).is_file() else {}
        configuration = plans.get("default_configuration", paths.model_folder_parts(candidates[0])[2])
    folder = root / paths.model_folder_name(method, plans_name, configuration)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: train with uadnet_train {name} FOLD -m {method} -c "
                                f"{configuration}")
    return folder


class Predictor:
    """Loads the folds once; :meth:`predict_folder` runs a whole input folder (or one shard of it)."""

    def __init__(self, settings: PredictionSettings) -> None:
        self.s = settings
        self.model_folder = settings.model_folder or model_folder_for(settings.dataset, settings.method,
                                                                      settings.plans_name, settings.configuration)
        self.plans, self.dataset_json = load_plans_and_dataset_json(self.model_folder)
        self.device = resolve_device(settings.device, self.plans.compute.device)
        self.config_name = paths.model_folder_parts(self.model_folder)[2]
        self.cfg = self.plans.configuration(self.config_name)
        self.method = build_method(settings.method, self.plans, self.config_name)
        folds = settings.folds or available_folds(self.model_folder, settings.checkpoint)
        if not folds:
            raise FileNotFoundError(f"{self.model_folder} has no fold with {settings.checkpoint}: train first")
        self.folds: list[TrainedFold] = [load_fold(self.model_folder, f, self.method, self.device,
                                                   settings.checkpoint) for f in folds]
        # score as the calibration did (precision, step size), unless asked otherwise — then say so
        calibrated = self.folds[0].calibration
        self.precision = settings.precision or calibrated.get("precision") or self.plans.compute.precision
        if settings.step_size is not None and not 0 < settings.step_size <= 1:
            raise PredictionError(f"--step_size must be in (0, 1] (a fraction of the patch), got {settings.step_size}")
        self.step_size = settings.step_size or calibrated.get("step_size") or self.cfg.inference.step_size
        for name, used in (("precision", self.precision), ("step_size", self.step_size)):
            if calibrated.get(name) is not None and calibrated[name] != used:
                print(f"WARNING: the thresholds were calibrated with {name} {calibrated[name]}, this prediction "
                      f"uses {used}: the stated false-positive rate is approximate")
        key = str(settings.fpr)
        for f in self.folds:
            if key not in f.calibration["voxel_thresholds"]:
                raise PredictionError(f"--fpr {settings.fpr} was not calibrated; {f.folder / 'calibration.json'} has "
                                      f"{sorted(f.calibration['voxel_thresholds'])}")
        fractions = {case_score_as_calibrated(f.calibration) for f in self.folds}
        if len(fractions) > 1:
            raise PredictionError(f"the folds computed their case scores differently (top fractions {sorted(fractions)}):"
                                  " their case thresholds cannot be averaged; predict with folds calibrated alike (-f)")
        self.case_top_fraction = fractions.pop()  # the case score as its threshold was calibrated
        # the fold ensemble's thresholds: mean of the folds' (each calibrated on its own healthy validation cases)
        self.voxel_threshold = float(np.mean([f.calibration["voxel_thresholds"][key] for f in self.folds]))
        self.case_threshold = float(np.mean([f.calibration["case_threshold"] for f in self.folds]))
        self.file_ending = self.plans.file_ending  # the reader the cases were preprocessed with, from the plans
        self.reader = reader_writer_class(self.plans.file_ending, self.plans.image_reader_writer)()
        self.output_ending = self.reader.output_file_ending(self.file_ending)
        self.num_channels = len(self.plans.channel_names)

    # -------------------------------------------------------------------------------------------- one case
    def predict_case(self, image: np.ndarray, properties: dict) -> dict:
        """Score one case read by the dataset's reader (``image`` (c, z, y, x)). Returns ``map`` (z, y, x) and
        ``restoration`` (c, z, y, x, in the input's intensity units) on the input grid, ``score`` (case score, on
        the preprocessed grid like the calibration) and timings (s)."""
        t0 = time.perf_counter()
        pre = preprocess_case(image, properties, self.plans, self.config_name)
        t1 = time.perf_counter()
        inf = self.cfg.inference
        step = self.step_size
        spacing = pre.properties["spacing_after_resampling"]
        total_score = np.zeros(pre.data.shape[1:], np.float32)
        total_restoration = np.zeros(pre.data.shape, np.float32) if self.s.save_restorations else None
        for f in self.folds:
            scorer = self.method.scorer(f.model, self.precision)
            score, restoration = score_volume(scorer, pre.data, self.cfg.patch_size, step, inf.gaussian_sigma_scale,
                                              inf.batch_size, self.device, foreground=pre.foreground)
            total_score += apply_postprocessing(score, pre.foreground, spacing, f.postprocessing,
                                                in_plane_only=self.cfg.dim == 2, image=pre.data,
                                                restoration=restoration)
            if total_restoration is not None:
                total_restoration += restoration
        total_score /= len(self.folds)
        t2 = time.perf_counter()
        result = {"map": revert_preprocessing(total_score, pre.properties, self.plans, order=1),
                  "score": case_score(total_score, pre.foreground, self.case_top_fraction),
                  "seconds": {"preprocessing": t1 - t0, "scoring": t2 - t1}}
        if total_restoration is not None:  # back to the input's intensity units: x · (high − low) + low per channel
            restored = revert_preprocessing(total_restoration / len(self.folds), pre.properties, self.plans, order=1)
            for c, (low, high) in enumerate(pre.properties["normalization_ranges"]):
                restored[c] = restored[c] * (high - low) + low
            result["restoration"] = restored
        result["seconds"]["export"] = time.perf_counter() - t2
        return result

    # ----------------------------------------------------------------------------------------- the folder
    def _outputs(self, case: str) -> dict[str, Path]:
        return export.case_outputs(self.s.output_folder, case, self.output_ending)

    def _finished(self, case: str) -> bool:
        o = self._outputs(case)
        needed = [o["map"], o["mask"], o["record"]] + ([o["restoration"]] if self.s.save_restorations else [])
        return all(p.exists() for p in needed)

    def _check_case(self, case: Case) -> None:
        export.check_channels(case, self.plans.channel_names, self.file_ending, PredictionError)

    def _run_case(self, case: Case) -> dict:
        export.start_case(self._outputs(case.identifier))
        self._check_case(case)
        image, props = export.read_case(self.reader, case, self.plans.channel_names, PredictionError)
        result = self.predict_case(image, props)
        o = self._outputs(case.identifier)
        export.write_map_and_mask(self.reader, result["map"], props, o, self.voxel_threshold)
        if "restoration" in result:
            self.reader.write(result["restoration"][:1].astype(np.float32), o["restoration"], props)
        record = export.case_record(case, result["map"], result["score"], self.voxel_threshold, self.case_threshold,
                                    result["seconds"])
        save_json(record, o["record"])
        return record

    def _prediction_json(self) -> dict:
        return {"model_folder": str(self.model_folder), "method": self.s.method, "configuration": self.config_name,
                "plans_name": self.s.plans_name, "folds": [f.fold for f in self.folds], "checkpoint": self.s.checkpoint,
                "fpr": self.s.fpr, "voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold,
                "voxel_thresholds_per_fold": {f.fold: f.calibration["voxel_thresholds"] for f in self.folds},
                "postprocessing_per_fold": {f.fold: f.postprocessing.to_dict() for f in self.folds},
                "step_size": self.step_size, "precision": self.precision, "device": str(self.device),
                "uadnet_version": self.plans.uadnet_version, "settings": {k: str(v) for k, v in
                                                                           asdict(self.s).items()}}

    def _write_scores_csv(self, cases: list[str]) -> int:
        """``scores.csv`` from the records of the input folder's finished cases (all shards); returns the row
        count. Records of cases no longer in the input folder are left out."""
        return export.write_scores_csv(self.s.output_folder, cases)

    def predict_folder(self) -> int:
        """Predict every case of the input folder (this shard); returns 0, or 1 if any case failed."""
        return export.run_folder(
            self.s.input_folder, self.s.output_folder, self.file_ending, self._run_case, self._prediction_json,
            self._finished, num_parts=self.s.num_parts, part_id=self.s.part_id,
            continue_prediction=self.s.continue_prediction, progress_bar=self.s.progress_bar, desc="predicting",
            fatal=(torch.cuda.OutOfMemoryError,), error=PredictionError,
            summary=lambda out: f"maps, masks (threshold {self.voxel_threshold:.4g} at {self.s.fpr:g} false-positive "
                                f"rate on healthy validation data) in {out}")
