"""Loading a trained method (plans copy, dataset.json copy, fold checkpoints, calibration, postprocessing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uadnet.methods import Method
from uadnet.plans import PLANS_FILE, Plans
from uadnet.postprocessing import Postprocessing
from uadnet.postprocessing.postprocessing import POSTPROCESSING_FILE
from uadnet.scoring.calibration import CALIBRATION_FILE
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import load_json


@dataclass
class TrainedFold:
    fold: str
    folder: Path
    model: nn.Module  # or an inference.backends.OnnxRestorer, called alike (uadnet_predict --backend)
    calibration: dict
    postprocessing: Postprocessing


def available_folds(model_folder: Path, checkpoint: str = ckpt.FINAL) -> list[str]:
    """The numbered folds with ``checkpoint``, sorted; ``["all"]`` if only ``fold_all`` has one."""
    folds = [p.name[len("fold_"):] for p in model_folder.glob("fold_*") if (p / checkpoint).is_file()]
    numbered = sorted((f for f in folds if f.isdigit()), key=int)
    return numbered or [f for f in folds if f == "all"]


def load_plans_and_dataset_json(model_folder: Path) -> tuple[Plans, dict]:
    plans_file = model_folder / PLANS_FILE
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file} is missing: {model_folder} does not look like a trained model folder "
                                "(uadnet_train writes it)")
    dataset_json = model_folder / "dataset.json"
    return Plans.load(plans_file), (load_json(dataset_json) if dataset_json.is_file() else {})


def load_fold(model_folder: Path, fold: str, method: Method, device: torch.device, checkpoint: str = ckpt.FINAL
              ) -> TrainedFold:
    """Network weights (``weights_only=True``), calibration and postprocessing of one fold of ``method`` (bound
    to the model folder's plans)."""
    plans = method.plans
    folder = model_folder / f"fold_{fold}"
    path = folder / checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train this fold first (uadnet_train DATASET {fold}) or choose "
                                "other folds with -f")
    trained_with = folder / PLANS_FILE  # written by uadnet_train since the model folder's copy could change
    if trained_with.is_file() and Plans.load(trained_with).to_dict() != plans.to_dict():
        raise ValueError(f"{trained_with} (the plans fold {fold} was trained with) differs from "
                         f"{model_folder / PLANS_FILE}: its maps would not be what it was validated and calibrated "
                         "for. Restore the model folder's plans, or predict with other folds (-f)")
    state = ckpt.load_checkpoint(path)
    model = method.network()
    model.load_state_dict(state["network"])
    model.to(device).eval().requires_grad_(False)
    calibration_file = folder / ckpt.per_checkpoint_file(CALIBRATION_FILE, checkpoint)
    refit = (f"uadnet_train DATASET {fold} --c --iterations {state.get('iteration', 'N')} (plus the -m/-c/-p it was "
             "trained with; the weights are kept)")
    if not calibration_file.is_file() and checkpoint != ckpt.FINAL:
        raise FileNotFoundError(f"{calibration_file} is missing: fold {fold} was trained before uadnet calibrated "
                                f"{checkpoint} too (or without validation). Calibrate it: {refit}")
    if not calibration_file.is_file():
        raise FileNotFoundError(f"{calibration_file} is missing: training was stopped before calibration. Run "
                                f"uadnet_train DATASET {fold} --c to finish it")
    calibration = load_json(calibration_file)
    if calibration.get("checkpoint", checkpoint) != checkpoint:
        raise FileNotFoundError(f"{calibration_file} was calibrated for {calibration['checkpoint']}, not {checkpoint}: "
                                f"its thresholds and postprocessing do not fit that network. Use -chk "
                                f"{calibration['checkpoint']}")
    pp_file = folder / ckpt.per_checkpoint_file(POSTPROCESSING_FILE, checkpoint)
    try:
        pp = Postprocessing.from_dict(load_json(pp_file)["postprocessing"]) if pp_file.is_file() else Postprocessing()
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{pp_file} cannot be used ({type(e).__name__}: {e}). Refit the fold's postprocessing and "
                         f"calibration: {refit}") from None
    return TrainedFold(fold, folder, model, calibration, pp)
