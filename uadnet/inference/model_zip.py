"""Model zips: a trained model folder packed with exactly what prediction needs, and unpacked safely.

A zip holds ``<dataset>/<method>__<plans>__<configuration>/`` with the model folder's ``uadnet_plans.json``,
``dataset.json`` and fingerprint, per fold the checkpoint, ``calibration.json``, ``postprocessing.json``, the fold's
``uadnet_plans.json``, ``progress.png`` and ``training_log.txt``, and ``manifest.json`` (versions, method, folds,
checkpoint, the healthy-validation figures and the sha256 of every file). Installing recreates
``UADNET_RESULTS/<dataset>/<model folder>``. Every member is checked against the manifest (names, sizes, hashes)
before anything is written; extraction goes to a temporary folder beside the target, renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import torch

import uadnet
from uadnet import paths
from uadnet.inference.model_loading import available_folds
from uadnet.plans import FINGERPRINT_FILE, PLANS_FILE
from uadnet.postprocessing.postprocessing import POSTPROCESSING_FILE
from uadnet.scoring.calibration import CALIBRATION_FILE
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import atomic_path, load_json, save_json

MANIFEST = "manifest.json"
FORMAT = "uadnet-model-zip-1"
MODEL_FILES = (PLANS_FILE, "dataset.json", FINGERPRINT_FILE)  # beside the folds; the plans are required
FOLD_FILES = (CALIBRATION_FILE, POSTPROCESSING_FILE, PLANS_FILE, "progress.png", "training_log.txt")
_DATASET = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member dates: the same model gives the same zip


class ModelZipError(ValueError):
    """A model zip that cannot be written, trusted or installed."""


def _sha256(stream: Any) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while chunk := stream.read(1 << 20):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _fold_metrics(fold_folder: Path, checkpoint: str) -> dict[str, Any]:
    """The healthy-validation figures of one fold: validation AP (synthetic anomalies on healthy validation cases),
    thresholds and case-score statistics from the calibration."""
    state = ckpt.load_checkpoint(fold_folder / checkpoint)  # also proves the checkpoint is readable
    cal = load_json(fold_folder / ckpt.per_checkpoint_file(CALIBRATION_FILE, checkpoint))
    pp_file = fold_folder / ckpt.per_checkpoint_file(POSTPROCESSING_FILE, checkpoint)
    pp = load_json(pp_file) if pp_file.is_file() else {}
    return {"iteration": state.get("iteration"),
            "best_validation_ap": state.get("best_validation_ap", state.get("validation_ap")),
            "validation_ap_all_voxels": pp.get("validation_ap_all_voxels"),
            "voxel_thresholds": cal.get("voxel_thresholds"), "case_threshold": cal.get("case_threshold"),
            "healthy_case_scores": {k: v for k, v in cal.get("healthy_case_scores", {}).items() if k != "values"},
            "num_calibration_cases": cal.get("num_cases"), "precision": cal.get("precision"),
            "step_size": cal.get("step_size"), "mirror_axes": cal.get("mirror_axes", [])}


def train_command(dataset: str, fold: str, method: str, plans_name: str, configuration: str) -> str:
    extra = "" if plans_name == paths.DEFAULT_PLANS_NAME else f" -p {plans_name}"
    return f"uadnet_train {dataset} {fold} -m {method} -c {configuration}{extra}"


def model_files(model_folder: Path, folds: list[str] | None = None, checkpoint: str = ckpt.FINAL
                ) -> tuple[dict[str, Any], dict[str, Path]]:
    """What a zip of ``model_folder`` holds: ``(manifest without hashes, {path in the zip: file})``. Missing
    folds, checkpoints or calibrations raise ``FileNotFoundError`` naming the file and the command that makes it."""
    model_folder = Path(model_folder).resolve()
    method, plans_name, configuration = paths.model_folder_parts(model_folder)
    plans_file = model_folder / PLANS_FILE
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file} is missing: {model_folder} is not a trained model folder "
                                "(uadnet_train writes it)")
    dataset = model_folder.parent.name
    if not _DATASET.match(dataset):
        dataset = str(load_json(plans_file).get("dataset_name", ""))
        if not _DATASET.match(dataset):
            raise ModelZipError(f"cannot tell the dataset of {model_folder}: neither its parent folder nor the "
                                f"plans' dataset_name is DatasetXXX_Name")
    folds = [str(f) for f in folds] if folds else available_folds(model_folder, checkpoint)
    if not folds:
        raise FileNotFoundError(f"{model_folder} has no fold with {checkpoint}: train one first "
                                f"({train_command(dataset, 'FOLD', method, plans_name, configuration)})")
    prefix = PurePosixPath(dataset, model_folder.name)
    files = {str(prefix / n): model_folder / n for n in MODEL_FILES if (model_folder / n).is_file()}
    metrics = {}
    for fold in folds:
        folder = model_folder / f"fold_{fold}"
        train = train_command(dataset, fold, method, plans_name, configuration)
        if not (folder / checkpoint).is_file():
            raise FileNotFoundError(f"{folder / checkpoint} is missing: train fold {fold} first ({train}), or "
                                    "choose other folds with -f")
        calibration = folder / ckpt.per_checkpoint_file(CALIBRATION_FILE, checkpoint)
        if not calibration.is_file():
            raise FileNotFoundError(f"{calibration} is missing: training stopped before calibration (or the fold was "
                                    f"trained before {checkpoint} was calibrated too); finish it with {train} --c")
        calibrated_for = load_json(calibration).get("checkpoint", checkpoint)
        if calibrated_for != checkpoint:
            raise ModelZipError(f"{calibration} was calibrated for {calibrated_for}, not {checkpoint}: "
                                f"its thresholds do not fit that network. Use -chk {calibrated_for}")
        extra = [ckpt.per_checkpoint_file(n, checkpoint) for n in (CALIBRATION_FILE, POSTPROCESSING_FILE)]
        for name in (checkpoint, *FOLD_FILES, *extra):
            if (folder / name).is_file():
                files[str(prefix / folder.name / name)] = folder / name
        metrics[fold] = _fold_metrics(folder, checkpoint)
    manifest = {"format": FORMAT, "uadnet_version": uadnet.__version__, "torch_version": torch.__version__,
                "dataset": dataset, "model_folder": model_folder.name, "method": method, "plans_name": plans_name,
                "configuration": configuration, "folds": folds, "checkpoint": checkpoint,
                "healthy_validation": metrics}
    return manifest, files


def export_model_zip(model_folder: str | os.PathLike, output: str | os.PathLike, folds: list[str] | None = None,
                     checkpoint: str = ckpt.FINAL) -> dict[str, Any]:
    """Write the zip of ``model_folder`` (the selected ``folds``, default every fold with ``checkpoint``) to
    ``output`` atomically, reopen it and check every hash; returns the manifest."""
    manifest, files = model_files(Path(model_folder), folds, checkpoint)
    output = Path(output)
    if output.suffix != ".zip":
        raise ModelZipError(f"{output}: the model zip's name must end in .zip")
    hashes = {}
    for name, path in files.items():
        with open(path, "rb") as f:
            sha, size = _sha256(f)
        hashes[name] = {"sha256": sha, "bytes": size}
    manifest["files"] = hashes
    with atomic_path(output, ".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name, path in files.items():
                info = zipfile.ZipInfo(name, _DATE)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                info.file_size = path.stat().st_size  # zip64 entries for files over 2 GiB
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            info = zipfile.ZipInfo(MANIFEST, _DATE)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        verify_model_zip(tmp)  # reopened and checked before it gets its name
    return manifest


def _check_name(name: str, prefix: PurePosixPath, zip_path: Path) -> None:
    p = PurePosixPath(name)
    if (name.startswith(("/", "\\")) or "\\" in name or ":" in name or ".." in p.parts or "." in p.parts
            or p.parts[:2] != prefix.parts or len(p.parts) < 3):
        raise ModelZipError(f"{zip_path}: member '{name}' would be written outside "
                            f"{prefix} (absolute, '..', or another folder): the zip is refused, nothing was written")


def verify_model_zip(zip_path: str | os.PathLike) -> dict[str, Any]:
    """Check the zip before anything is extracted: a readable manifest of this format, member names inside
    ``<dataset>/<model folder>/``, exactly the manifest's files (none missing, none extra) with their sizes and
    sha256. Returns the manifest; ``ModelZipError`` naming the zip, the member and the fix otherwise."""
    zip_path = Path(zip_path)
    tamper = ("the zip is damaged or was changed after export: copy it again from its source, or export it again "
              "(uadnet_export_model_to_zip)")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelZipError(f"{zip_path} is not a readable zip ({e})") from None
    with zf:
        names = zf.namelist()
        if MANIFEST not in names:
            raise ModelZipError(f"{zip_path} has no {MANIFEST}: it is not a uadnet model zip "
                                "(uadnet_export_model_to_zip makes them)")
        try:
            manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
        except (ValueError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise ModelZipError(f"{zip_path}: {MANIFEST} is unreadable ({e}); {tamper}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelZipError(f"{zip_path}: {MANIFEST} is not a {FORMAT} manifest (format "
                                f"{manifest.get('format') if isinstance(manifest, dict) else None})")
        dataset, folder, listed = manifest.get("dataset", ""), manifest.get("model_folder", ""), manifest.get("files")
        if not _DATASET.match(str(dataset)) or not isinstance(listed, dict):
            raise ModelZipError(f"{zip_path}: {MANIFEST} names no valid dataset or file list; {tamper}")
        parts = paths.model_folder_parts(str(folder))
        if (folder != paths.model_folder_name(*parts)
                or [manifest.get(k) for k in ("method", "plans_name", "configuration")] != list(parts)):
            raise ModelZipError(f"{zip_path}: {MANIFEST} model folder '{folder}' does not match its method, plans "
                                f"and configuration; {tamper}")
        prefix = PurePosixPath(dataset, folder)
        members = [n for n in names if n != MANIFEST]
        if len(set(names)) != len(names):
            raise ModelZipError(f"{zip_path} holds a member twice; {tamper}")
        for name in members:
            _check_name(name, prefix, zip_path)
            if name not in listed:
                raise ModelZipError(f"{zip_path}: member '{name}' is not in {MANIFEST}; {tamper}")
        for name in listed:
            _check_name(name, prefix, zip_path)
            if name not in members:
                raise ModelZipError(f"{zip_path}: {name} is listed in {MANIFEST} but missing from the zip; {tamper}")
        for name in members:
            try:
                with zf.open(name) as f:
                    sha, size = _sha256(f)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # CRC mismatch: BadZipFile; a damaged
                # deflate stream: zlib.error (which of the two a changed byte gives depends on where it lands)
                raise ModelZipError(f"{zip_path}: member {name} is unreadable ({e}); {tamper}") from None
            if sha != listed[name].get("sha256") or size != listed[name].get("bytes"):
                raise ModelZipError(f"{zip_path}: {name} does not match its sha256 in {MANIFEST}; {tamper}")
    return manifest


def extract_model_zip(zip_path: str | os.PathLike, root: str | os.PathLike, overwrite: bool = False) -> Path:
    """Verify the zip, then recreate ``root/<dataset>/<model folder>`` from it and return that folder. The files
    are written to a temporary folder beside it (hashed again while written) and renamed into place, so a failure
    leaves nothing half-written. An existing model folder is replaced only with ``overwrite``."""
    zip_path = Path(zip_path)
    manifest = verify_model_zip(zip_path)
    target = Path(root) / manifest["dataset"] / manifest["model_folder"]
    if target.exists() and not overwrite:
        raise ModelZipError(f"{target} already exists: pass --overwrite to replace it (or remove it first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.installing-", dir=target.parent))
    old = None
    try:
        prefix = PurePosixPath(manifest["dataset"], manifest["model_folder"])
        with zipfile.ZipFile(zip_path) as zf:
            for name, expected in manifest["files"].items():
                dest = staging.joinpath(*PurePosixPath(name).relative_to(prefix).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(name) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != expected["sha256"]:
                    raise ModelZipError(f"{zip_path}: {name} changed while it was extracted; nothing was installed")
        save_json(manifest, staging / MANIFEST)  # where the installed model came from
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(staging, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)  # put the previous model back
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target
