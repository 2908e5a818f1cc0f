"""Prediction: raw cases → preprocessing (the training function) → sliding-window scores per fold → fold mean →
postprocessing → inverse preprocessing → anomaly map, mask, restoration, case score on the exact input grid.

Output folder (see ``documentation/how_to_use.md``): ``case<ending>`` float32 map, ``case_mask<ending>`` binary
at the calibrated threshold, ``case_restoration_0000<ending>`` with ``save_restorations``, ``scores.csv``,
``prediction.json`` and ``per_case/case.json`` (written last for each case: a case is finished when it exists).
2D natural images come back as ``.tif`` maps and masks of the same size.
"""

from __future__ import annotations

import csv
import io
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uadnet import paths
from uadnet.dataset.raw_dataset import Case, list_cases
from uadnet.imageio import reader_writer_for
from uadnet.inference.model_loading import TrainedFold, available_folds, load_fold, load_plans_and_dataset_json
from uadnet.methods import get_method
from uadnet.postprocessing import apply_postprocessing
from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing
from uadnet.scoring.calibration import case_score
from uadnet.scoring.scorers import score_volume
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import atomic_path, load_json, save_json
from uadnet.utilities.torch_utils import resolve_device

PER_CASE = "per_case"


class PredictionError(RuntimeError):
    pass


@dataclass
class PredictionSettings:
    input_folder: Path
    output_folder: Path
    dataset: str | int
    configuration: str | None = None
    method: str = "cold_ensemble"
    plans_name: str = "uadnet_plans"
    folds: list[str] | None = None  # None: every fold with a final checkpoint
    checkpoint: str = ckpt.FINAL
    save_restorations: bool = False
    num_parts: int = 1
    part_id: int = 0
    continue_prediction: bool = False
    device: str = "cpu"
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
        candidates = sorted(root.glob(f"{method}__{plans_name}__*"))
        if not candidates:
            raise FileNotFoundError(f"no trained {method} model for {name} in {root}: run uadnet_train first")
        plans = load_json(candidates[0] / "uadnet_plans.json") if (candidates[0] / "uadnet_plans.json").is_file() \
            else {}
        configuration = plans.get("default_configuration", candidates[0].name.split("__")[-1])
    folder = root / f"{method}__{plans_name}__{configuration}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: train with uadnet_train {name} FOLD -m {method} -c "
                                f"{configuration}")
    return folder


class Predictor:
    """Loads the folds once; :meth:`predict_folder` runs a whole input folder (or one shard of it)."""

    def __init__(self, settings: PredictionSettings) -> None:
        self.s = settings
        self.device = resolve_device(settings.device)
        self.model_folder = settings.model_folder or model_folder_for(settings.dataset, settings.method,
                                                                      settings.plans_name, settings.configuration)
        self.plans, self.dataset_json = load_plans_and_dataset_json(self.model_folder)
        self.config_name = self.model_folder.name.split("__")[-1]
        self.cfg = self.plans.configuration(self.config_name)
        self.method = get_method(settings.method)
        folds = settings.folds or available_folds(self.model_folder, settings.checkpoint)
        if not folds:
            raise FileNotFoundError(f"{self.model_folder} has no fold with {settings.checkpoint}: train first")
        self.folds: list[TrainedFold] = [load_fold(self.model_folder, f, settings.method, self.plans,
                                                   self.config_name, self.device, settings.checkpoint) for f in folds]
        # score as the calibration did (precision, step size), unless asked otherwise — then say so
        calibrated = self.folds[0].calibration
        self.precision = settings.precision or calibrated.get("precision") or self.plans.compute.precision
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
        # the fold ensemble's thresholds: mean of the folds' (each calibrated on its own healthy validation cases)
        self.voxel_threshold = float(np.mean([f.calibration["voxel_thresholds"][key] for f in self.folds]))
        self.case_threshold = float(np.mean([f.calibration["case_threshold"] for f in self.folds]))
        self.file_ending = self.dataset_json.get("file_ending", self.plans.file_ending)
        self.reader = reader_writer_for(self.file_ending, self.dataset_json.get("overwrite_image_reader_writer"))
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
            scorer = self.method.scorer(f.model, self.plans, self.precision)
            score, restoration = score_volume(scorer, pre.data, self.cfg.patch_size, step, inf.gaussian_sigma_scale,
                                              inf.batch_size, self.device, foreground=pre.foreground)
            total_score += apply_postprocessing(score, pre.foreground, spacing, f.postprocessing,
                                                in_plane_only=self.cfg.dim == 2)
            if total_restoration is not None:
                total_restoration += restoration
        total_score /= len(self.folds)
        t2 = time.perf_counter()
        result = {"map": revert_preprocessing(total_score, pre.properties, self.plans, order=1),
                  "score": case_score(total_score, pre.foreground),
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
        out = self.s.output_folder
        return {"map": out / f"{case}{self.output_ending}", "mask": out / f"{case}_mask{self.output_ending}",
                "restoration": out / f"{case}_restoration_0000{self.output_ending}",
                "record": out / PER_CASE / f"{case}.json"}

    def _finished(self, case: str) -> bool:
        o = self._outputs(case)
        needed = [o["map"], o["mask"], o["record"]] + ([o["restoration"]] if self.s.save_restorations else [])
        return all(p.exists() for p in needed)

    def _check_case(self, case: Case) -> None:
        if case.channel_indices != list(range(self.num_channels)):
            found = ", ".join(f"{i:04d}" for i in case.channel_indices)
            raise PredictionError(f"case {case.identifier} has channel file(s) {found}; the model expects "
                                  f"{self.num_channels} ({', '.join(self.plans.channel_names.values())}) named "
                                  f"{case.identifier}_0000{self.file_ending} … ")

    def _run_case(self, case: Case) -> dict:
        self._outputs(case.identifier)["record"].unlink(missing_ok=True)  # not finished until rewritten
        self._check_case(case)
        image, props = self.reader.read_images(case.images)
        result = self.predict_case(image, props)
        o = self._outputs(case.identifier)
        self.reader.write(result["map"].astype(np.float32), o["map"], props)
        self.reader.write((result["map"] >= self.voxel_threshold).astype(np.uint8), o["mask"], props)
        if "restoration" in result:
            self.reader.write(result["restoration"][:1].astype(np.float32), o["restoration"], props)
        record = {"case": case.identifier, "score": result["score"], "flagged": result["score"] >=
                  self.case_threshold, "voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold,
                  "anomalous_voxels": int((result["map"] >= self.voxel_threshold).sum()),
                  "seconds": result["seconds"], "inputs": [p.name for p in case.images]}
        save_json(record, o["record"])
        return record

    def _prediction_json(self) -> dict:
        return {"model_folder": str(self.model_folder), "method": self.s.method, "configuration": self.config_name,
                "plans_name": self.s.plans_name, "folds": [f.fold for f in self.folds], "checkpoint": self.s.checkpoint,
                "fpr": self.s.fpr, "voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold,
                "voxel_thresholds_per_fold": {f.fold: f.calibration["voxel_thresholds"] for f in self.folds},
                "postprocessing_per_fold": {f.fold: f.postprocessing.to_dict() for f in self.folds},
                "step_size": self.step_size, "precision": self.precision,
                "uadnet_version": self.plans.uadnet_version, "settings": {k: str(v) for k, v in
                                                                           asdict(self.s).items()}}

    def _write_scores_csv(self, cases: list[str]) -> int:
        """``scores.csv`` from the records of the input folder's finished cases (all shards); returns the row
        count. Records of cases no longer in the input folder are left out."""
        folder = self.s.output_folder / PER_CASE
        records = [load_json(folder / f"{c}.json") for c in sorted(cases) if (folder / f"{c}.json").is_file()]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "score", "flagged"])
        for r in records:
            writer.writerow([r["case"], f"{r['score']:.6g}", int(r["flagged"])])
        with atomic_path(self.s.output_folder / "scores.csv", ".csv") as tmp:
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
        return len(records)

    def predict_folder(self) -> int:
        """Predict every case of the input folder (this shard); returns 0, or 1 if any case failed."""
        inp, out = Path(self.s.input_folder).resolve(), Path(self.s.output_folder).resolve()
        if not inp.is_dir():
            raise FileNotFoundError(f"input folder {inp} does not exist")
        if inp == out or inp in out.parents:
            raise PredictionError(f"the output folder {out} must not be the input folder or inside it: prediction "
                                  "never writes next to the inputs")
        if not 1 <= self.s.num_parts or not 0 <= self.s.part_id < self.s.num_parts:
            raise PredictionError(f"--part_id must be in 0..{self.s.num_parts - 1}, got {self.s.part_id}")
        listing = list_cases(inp, self.file_ending)
        failures = [(p.name, f"file name does not follow <case>_<channel 0000>{self.file_ending}")
                    for p in listing.unmatched]
        cases = sorted(listing.cases)[self.s.part_id::self.s.num_parts]
        if not cases and not failures:
            raise PredictionError(f"no {self.file_ending} images named <case>_0000{self.file_ending} in {inp}")
        out.mkdir(parents=True, exist_ok=True)
        (out / PER_CASE).mkdir(exist_ok=True)
        save_json(self._prediction_json(), out / "prediction.json")
        todo = [c for c in cases if not (self.s.continue_prediction and self._finished(c))]
        if len(todo) < len(cases):
            print(f"{len(cases) - len(todo)} case(s) already predicted, {len(todo)} to go")
        for name in tqdm(todo, desc="predicting", unit="case", disable=not self.s.progress_bar):
            try:
                self._run_case(listing.cases[name])
            except (KeyboardInterrupt, torch.cuda.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - a bad case is reported and skipped; the others are still written
                failures.append((name, f"{type(e).__name__}: {e}"))
                if os.environ.get("UADNET_DEBUG"):
                    traceback.print_exc()
        n = self._write_scores_csv(list(listing.cases))
        print(f"{n} case(s) in {out / 'scores.csv'}; maps, masks (threshold {self.voxel_threshold:.4g} at "
              f"{self.s.fpr:g} false-positive rate on healthy validation data) in {out}")
        for name, why in failures:
            print(f"FAILED {name}: {why}")
        return 1 if failures else 0
