"""Prediction: raw cases → preprocessing (the training function) → sliding-window scores per fold → fold mean →
postprocessing → inverse preprocessing → anomaly map, mask, restoration, case score on the exact input grid.

Output folder (see ``documentation/how_to_use.md``): ``case<ending>`` float32 map, ``case_mask<ending>`` binary
at the calibrated threshold, ``case_restoration_0000<ending>`` with ``save_restorations``,
``case_uncertainty<ending>`` with ``save_uncertainty`` (:mod:`uadnet.inference.uncertainty`), ``scores.csv``,
``prediction.json`` and ``per_case/case.json`` (written last for each case: a case is finished when it exists).
2D natural images come back as ``.tif`` maps and masks of the same size. The folder is written by
``uadnet.inference.export``, shared with the training-free baselines (``uadnet_baseline``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from uadnet import __version__, paths
from uadnet.dataset.raw_dataset import Case
from uadnet.imageio import reader_writer_class
from uadnet.inference import export
from uadnet.inference.backends import BackendError, choose_backend, restorer_for
from uadnet.inference.folder_runner import FolderRun, run_folder
from uadnet.inference.model_loading import TrainedFold, available_folds, load_fold, load_plans_and_dataset_json
from uadnet.inference.uncertainty import (
    DEFINITION,
    MemberSpread,
    UncertaintyError,
    check_members,
    members_description,
    uncertainty_summary,
)
from uadnet.methods import build_method
from uadnet.methods.base import num_members
from uadnet.plans import PLANS_FILE
from uadnet.postprocessing import apply_postprocessing
from uadnet.preprocessing.preprocessor import PreprocessedCase, preprocess_case, revert_preprocessing
from uadnet.run_settings import resolve_run_settings
from uadnet.scoring.calibration import CaseScore, case_score_as_calibrated
from uadnet.scoring.mirroring import check_mirror_axes
from uadnet.scoring.scorers import score_volume, score_volume_members
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import load_json

PER_CASE = export.PER_CASE


class PredictionError(RuntimeError):
    pass


@dataclass
class PredictionSettings:
    input_folder: Path
    output_folder: Path
    dataset: str | int | None  # None with model_folder
    configuration: str | None = None
    method: str = "cold_ensemble"
    plans_name: str = paths.DEFAULT_PLANS_NAME
    folds: list[str] | None = None  # None: every fold with a final checkpoint
    checkpoint: str = ckpt.FINAL
    save_restorations: bool = False
    save_uncertainty: bool = False  # also <case>_uncertainty<ending> (uadnet.inference.uncertainty)
    num_parts: int = 1
    part_id: int = 0
    continue_prediction: bool = False
    device: str | None = None  # None: the plans' compute.device (auto: the best available)
    step_size: float | None = None
    mirror_axes: list[int] | None = None  # None: as calibrated; [] none (--disable_tta)
    precision: str | None = None
    backend: str = "torch"  # torch | onnxruntime | openvino | auto (uadnet.inference.backends)
    fpr: float = 0.01
    progress_bar: bool = True
    model_folder: Path | None = None  # <method>__<plans>__<configuration>: replaces the dataset/method/plans lookup
    output_format: str = "uadnet"  # or "mood": the MOOD challenge's layout (uadnet.inference.mood)
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


def settings_for_model_folder(settings: PredictionSettings) -> PredictionSettings:
    """``settings`` with method, plans name and configuration read from the name of ``settings.model_folder``
    (``<method>__<plans>__<configuration>``); a different ``configuration`` asked for is an error. Needs neither
    the raw nor the preprocessed folder, nor the UADNET_* variables."""
    folder = Path(settings.model_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist (a model zip is read by uadnet_predict and "
                                "UadnetPredictor, or installed with uadnet_install_pretrained_model_from_zip)")
    method, plans_name, configuration = paths.model_folder_parts(folder)
    if settings.configuration not in (None, configuration):
        raise PredictionError(f"{folder} holds configuration {configuration}, not {settings.configuration}: leave "
                              "out -c, or choose the model folder of that configuration")
    return replace(settings, model_folder=folder, method=method, plans_name=plans_name, configuration=configuration)


class Predictor:
    """Loads the folds once; :meth:`predict_folder` runs a whole input folder (or one shard of it)."""

    def __init__(self, settings: PredictionSettings) -> None:
        if settings.model_folder is not None:
            settings = settings_for_model_folder(settings)
        elif settings.dataset is None:
            raise PredictionError("give the dataset the model was trained on (-d) or its model folder (--model_folder)")
        self.s = settings
        self.model_folder = settings.model_folder or model_folder_for(settings.dataset, settings.method,
                                                                      settings.plans_name, settings.configuration)
        self.plans, self.dataset_json = load_plans_and_dataset_json(self.model_folder)
        self.config_name = paths.model_folder_parts(self.model_folder)[2]
        self.cfg = self.plans.configuration(self.config_name)
        self.method = build_method(settings.method, self.plans, self.config_name)
        folds = settings.folds or available_folds(self.model_folder, settings.checkpoint)
        if not folds:
            raise FileNotFoundError(f"{self.model_folder} has no fold with {settings.checkpoint}: train first")
        flags = {"device": settings.device, "precision": settings.precision, "step_size": settings.step_size,
                 "mirror_axes": settings.mirror_axes}
        try:  # flags checked and the device resolved before any fold is loaded
            device = resolve_run_settings(self.plans, self.config_name, flags).device
        except ValueError as e:
            raise PredictionError(str(e)) from None
        self.folds: list[TrainedFold] = [load_fold(self.model_folder, f, self.method, device,
                                                   settings.checkpoint) for f in folds]
        # score as the calibration did (precision, step size, mirroring), unless asked otherwise — then say so
        calibrated = self.folds[0].calibration
        defaults = {k: (calibrated.get(k), "calibration") for k in ("precision", "step_size")}
        defaults["mirror_axes"] = (calibrated.get("mirror_axes", []), "calibration")  # absent: calibrated without
        self.run_settings = resolve_run_settings(self.plans, self.config_name, flags, device=device, defaults=defaults)
        self.device, self.precision = self.run_settings.device, self.run_settings["precision"]
        self.step_size = self.run_settings["step_size"]
        try:
            self.mirror_axes = list(check_mirror_axes(self.run_settings["mirror_axes"], self.cfg.dim))
        except ValueError as e:
            raise PredictionError(f"{e} (configuration {self.config_name}): choose other mirror axes") from None
        for f in self.folds:
            for name, used in (("precision", self.precision), ("step_size", self.step_size),
                               ("mirror_axes", self.mirror_axes)):
                was = f.calibration.get(name, [] if name == "mirror_axes" else None)
                if was is not None and (sorted(was) != sorted(used) if name == "mirror_axes" else was != used):
                    print(f"WARNING: the thresholds of fold {f.fold} were calibrated with {name} {was}, this "
                          f"prediction uses {used}: the stated false-positive rate is approximate")
        self.backends = self._use_backend(settings.backend, calibrated.get("precision"))
        key = str(settings.fpr)
        for f in self.folds:
            if key not in f.calibration["voxel_thresholds"]:
                raise PredictionError(f"--fpr {settings.fpr} was not calibrated; {f.folder / 'calibration.json'} has "
                                      f"{sorted(f.calibration['voxel_thresholds'])}")
        specs = [case_score_as_calibrated(f.calibration) for f in self.folds]
        try:  # as the thresholds were calibrated (healthy statistics averaged over the folds)
            self.case_score = CaseScore.mean_of(specs)
        except ValueError as e:
            raise PredictionError(f"{e}: their case thresholds cannot be averaged; predict with folds calibrated "
                                  "alike (-f)") from None
        # the fold ensemble's thresholds: mean of the folds' (each calibrated on its own healthy validation cases)
        self.voxel_threshold = float(np.mean([f.calibration["voxel_thresholds"][key] for f in self.folds]))
        self.case_threshold = float(np.mean([f.calibration["case_threshold"] for f in self.folds]))
        self.file_ending = self.plans.file_ending  # the reader the cases were preprocessed with, from the plans
        self.reader = reader_writer_class(self.plans.file_ending, self.plans.image_reader_writer)()
        self.output_ending = self.reader.output_file_ending(self.file_ending)
        self.num_channels = len(self.plans.channel_names)

    def _use_backend(self, name: str, calibrated_precision: str | None) -> dict[str, str]:
        """Swap each fold's network for the backend's restorer (torch keeps it); returns fold → backend used."""
        try:
            name = choose_backend(name, self.device, self.precision)
            used = {}
            for f in self.folds:
                f.model, used[f.fold] = restorer_for(name, f.model, f.folder, self.s.checkpoint, self.cfg.patch_size,
                                                     4 * self.cfg.inference.batch_size, self.precision)
        except BackendError as e:
            raise PredictionError(str(e)) from None
        if "onnxruntime" in used.values() and calibrated_precision not in (None, "fp32") and self.precision != "fp32":
            print(f"WARNING: the thresholds were calibrated with precision {calibrated_precision}; onnxruntime runs "
                  "fp32: the stated false-positive rate is approximate")
        if "openvino" in used.values():  # the same network, another runtime's rounding (bf16 differs most)
            print("note: the restorer runs in OpenVINO (checked against PyTorch before use); the thresholds were "
                  "calibrated with PyTorch")
        return used

    # -------------------------------------------------------------------------------------------- one case
    def score_case(self, image: np.ndarray, properties: dict, with_restoration: bool | None = None,
                   with_uncertainty: bool | None = None) -> dict:
        """Score one case read by the dataset's reader (``image`` (c, z, y, x)). Returns ``map`` (z, y, x) and
        ``restoration`` (c, z, y, x, in the input's intensity units; with ``with_restoration``, default
        ``save_restorations``) on the input grid, ``score`` (case score, on the preprocessed grid like the
        calibration) and timings (s); with ``with_uncertainty`` (default ``save_uncertainty``) also ``uncertainty``
        (z, y, x, anomaly-map units) and ``uncertainty_summary`` (:mod:`uadnet.inference.uncertainty`)."""
        return self.score_prepared(self.prepare(image, properties), with_restoration, with_uncertainty)

    def uncertainty_members(self) -> tuple[int, str]:
        """``(members, description)`` of the uncertainty map; :class:`PredictionError` when there are fewer than 2."""
        per_fold = num_members(self.method.scorer(self.folds[0].model, self.precision))
        folds = [f.fold for f in self.folds]
        try:
            total = check_members(self.s.method, folds, per_fold)
        except UncertaintyError as e:
            raise PredictionError(str(e)) from None
        return total, members_description(folds, per_fold)

    def prepare(self, image: np.ndarray, properties: dict) -> tuple[PreprocessedCase, float]:
        """Preprocessing of one case (the part of :meth:`score_case` the folder runner does ahead, in its loader
        thread): ``(preprocessed case, seconds)``."""
        t0 = time.perf_counter()
        return preprocess_case(image, properties, self.plans, self.config_name), time.perf_counter() - t0

    def fold_scores(self, fold: TrainedFold, image: np.ndarray, foreground: np.ndarray, members: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One fold's raw sliding-window score (z, y, x), restoration (c, z, y, x) and, with ``members`` and a
        scorer that has them, the member scores (M, z, y, x; else None) of a preprocessed ``image``, at this
        prediction's precision, step size and mirror axes."""
        scorer, inf = self.method.scorer(fold.model, self.precision), self.cfg.inference
        window = (scorer, image, self.cfg.patch_size, self.step_size, inf.gaussian_sigma_scale, inf.batch_size,
                  self.device)
        if members and num_members(scorer) > 1:  # only then: M more maps in the sliding window
            return score_volume_members(*window, foreground=foreground, mirror_axes=self.mirror_axes)
        return (*score_volume(*window, foreground=foreground, mirror_axes=self.mirror_axes), None)

    def postprocess(self, fold: TrainedFold, score: np.ndarray, image: np.ndarray, restoration: np.ndarray,
                    foreground: np.ndarray, spacing: Sequence[float], novelty_unit: np.ndarray | None = None
                    ) -> np.ndarray:
        """``score`` through ``fold``'s postprocessing (residual normalisation first), on the preprocessed grid;
        ``novelty_unit``: the intensity-novelty term at weight 1 when computed elsewhere (validation cases)."""
        return apply_postprocessing(score, foreground, spacing, fold.postprocessing, in_plane_only=self.cfg.dim == 2,
                                    image=image, restoration=restoration, novelty_unit=novelty_unit)

    def score_prepared(self, prepared: tuple[PreprocessedCase, float], with_restoration: bool | None = None,
                       with_uncertainty: bool | None = None) -> dict:
        """The network part of :meth:`score_case`, for a case from :meth:`prepare`."""
        want_restoration = self.s.save_restorations if with_restoration is None else with_restoration
        want_uncertainty = self.s.save_uncertainty if with_uncertainty is None else with_uncertainty
        members = self.uncertainty_members() if want_uncertainty else None
        pre, preprocessing_seconds = prepared
        t1 = time.perf_counter()
        spacing = pre.properties["spacing_after_resampling"]
        total_score = np.zeros(pre.data.shape[1:], np.float32)
        total_restoration = np.zeros(pre.data.shape, np.float32) if want_restoration else None
        spread = MemberSpread(pre.data.shape[1:]) if members is not None else None
        for f in self.folds:
            score, restoration, member_scores = self.fold_scores(f, pre.data, pre.foreground, spread is not None)

            def post(s: np.ndarray, f: TrainedFold = f, restoration: np.ndarray = restoration) -> np.ndarray:
                return self.postprocess(f, s, pre.data, restoration, pre.foreground, spacing)

            fold_map = post(score)
            total_score += fold_map
            if spread is not None:  # members: the fold's severities (each postprocessed like its map), else the fold
                for member in (member_scores if member_scores is not None else [None]):
                    spread.add(fold_map if member is None else post(member))
                del member_scores
            if total_restoration is not None:
                total_restoration += restoration
        total_score /= len(self.folds)
        t2 = time.perf_counter()
        result = {"map": revert_preprocessing(total_score, pre.properties, self.plans, order=1),
                  "score": self.case_score(total_score, pre.foreground),
                  "seconds": {"preprocessing": preprocessing_seconds, "scoring": t2 - t1}}
        if total_restoration is not None:  # back to the input's intensity units: x · (high − low) + low per channel
            restored = revert_preprocessing(total_restoration / len(self.folds), pre.properties, self.plans, order=1)
            for c, (low, high) in enumerate(pre.properties["normalization_ranges"]):
                restored[c] = restored[c] * (high - low) + low
            result["restoration"] = restored
        if spread is not None:  # linear interpolation of values >= 0 stays >= 0; clamped against rounding
            uncertainty = np.maximum(revert_preprocessing(spread.std(), pre.properties, self.plans, order=1), 0)
            foreground = revert_preprocessing(pre.foreground.astype(np.float32), pre.properties, self.plans,
                                              order=0) > 0.5
            result["uncertainty"] = uncertainty
            result["uncertainty_summary"] = uncertainty_summary(uncertainty, foreground,
                                                                result["map"] >= self.voxel_threshold, *members)
        result["seconds"]["export"] = time.perf_counter() - t2
        return result

    # ----------------------------------------------------------------------------------------- the folder
    def read(self, case: Case) -> tuple[np.ndarray, dict]:
        """Image (c, z, y, x) and properties of one input case, checked (channels, finite values)."""
        export.check_channels(case, self.plans.channel_names, self.file_ending, PredictionError)
        return export.read_case(self.reader, case, self.plans.channel_names, PredictionError)

    @property
    def writes_restoration(self) -> bool:
        return self.s.save_restorations

    @property
    def writes_uncertainty(self) -> bool:
        return self.s.save_uncertainty

    def prediction_json(self) -> dict:
        return {"model_folder": str(self.model_folder), "method": self.s.method, "configuration": self.config_name,
                "plans_name": self.s.plans_name, "folds": [f.fold for f in self.folds], "checkpoint": self.s.checkpoint,
                "fpr": self.s.fpr, "voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold,
                "voxel_thresholds_per_fold": {f.fold: f.calibration["voxel_thresholds"] for f in self.folds},
                "postprocessing_per_fold": {f.fold: f.postprocessing.summary() for f in self.folds},
                "step_size": self.step_size, "mirror_axes": self.mirror_axes, "precision": self.precision,
                "device": str(self.device),
                "run_settings": self.run_settings.to_dict(), "backend_per_fold": self.backends,
                "uadnet_version": __version__, "plans_uadnet_version": self.plans.uadnet_version,
                "settings": {k: str(v) for k, v in asdict(self.s).items()},
                **({"uncertainty": {"definition": DEFINITION, "members": self.uncertainty_members()[1]}}
                   if self.s.save_uncertainty else {})}

    def predict_folder(self) -> int:
        """Predict every case of the input folder (this shard); returns 0, or 1 if any case failed."""
        # on a GPU the CPU stages overlap the network for free; on a CPU they compete with it for the same cores
        # (measured on 2 cores: no gain, documentation/benchmarks.md), so there the stages run one after the other
        prefetch = 0 if self.device.type == "cpu" else 2
        if self.s.save_uncertainty:
            self.uncertainty_members()  # refused before anything is written
        run = FolderRun(self.s.input_folder, self.s.output_folder, self.s.num_parts, self.s.part_id,
                        self.s.continue_prediction, self.s.progress_bar, "predicting", prefetch,
                        output_format=self.s.output_format)
        return run_folder(
            self, run, fatal=(torch.cuda.OutOfMemoryError,), error=PredictionError,
            summary=lambda out: f"maps, masks (threshold {self.voxel_threshold:.4g} at {self.s.fpr:g} false-positive "
                                f"rate on healthy validation data) in {out}")
