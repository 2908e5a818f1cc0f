"""The three data folders, read lazily from the environment.

``UADNET_RAW``           raw datasets (``DatasetXXX_Name/dataset.json, imagesTr/ ...``)
``UADNET_PREPROCESSED``  fingerprints, plans, splits and preprocessed arrays
``UADNET_RESULTS``       trained models and their calibration

When a variable is unset, ``~/uadnet_data/<raw|preprocessed|results>`` is used (printed once), so a first
run works without any set-up. Paths are resolved when asked for, never at import time, so tests and
scripts may set the variables after importing uadnet.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ENV_VARIABLES = {
    "raw": "UADNET_RAW",
    "preprocessed": "UADNET_PREPROCESSED",
    "results": "UADNET_RESULTS",
}
DEFAULT_ROOT = Path("~/uadnet_data")
_warned: set[str] = set()


class PathError(RuntimeError):
    """A data folder is missing, unusable or a dataset cannot be resolved."""


def _folder(kind: str, create: bool) -> Path:
    var = ENV_VARIABLES[kind]
    value = os.environ.get(var)
    if value:
        path = Path(value).expanduser()
    else:
        path = (DEFAULT_ROOT / kind).expanduser()
        if var not in _warned:
            _warned.add(var)
            print(f"uadnet: {var} is not set; using {path} (export {var}=/your/folder to choose)",
                  file=sys.stderr)
    if path.exists() and not path.is_dir():
        raise PathError(f"{var}={path} exists but is not a folder. Point {var} at a folder.")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PathError(f"cannot create {var}={path} ({e}). Set {var} to a writable folder.") from e
        if not os.access(path, os.W_OK):
            raise PathError(f"{var}={path} is not writable. Set {var} to a writable folder.")
    return path


def raw_folder(create: bool = False) -> Path:
    """``UADNET_RAW`` (raw datasets)."""
    return _folder("raw", create)


def preprocessed_folder(create: bool = False) -> Path:
    """``UADNET_PREPROCESSED`` (fingerprints, plans, splits, preprocessed arrays)."""
    return _folder("preprocessed", create)


def results_folder(create: bool = False) -> Path:
    """``UADNET_RESULTS`` (trained models)."""
    return _folder("results", create)


DEFAULT_PLANS_NAME = "uadnet_plans"  # the plans file <name>.json the planner writes and every command reads by default
_SEP = "__"


def model_folder_name(method: str, plans_name: str, configuration: str) -> str:
    """``<method>__<plans>__<configuration>``, the folder of one trained model inside ``UADNET_RESULTS/<dataset>``
    (the one place that builds it; :func:`model_folder_parts` reads it back)."""
    for part in (method, plans_name, configuration):
        if _SEP in part or not part:
            raise ValueError(f"'{part}' cannot be part of a model folder name (empty, or contains '{_SEP}')")
    return _SEP.join((method, plans_name, configuration))


def model_folder_parts(folder: str | os.PathLike) -> tuple[str, str, str]:
    """``(method, plans name, configuration)`` of a model folder named by :func:`model_folder_name`."""
    parts = Path(folder).name.split(_SEP)
    if len(parts) != 3:
        raise ValueError(f"{folder} is not a model folder named <method>{_SEP}<plans>{_SEP}<configuration>")
    return parts[0], parts[1], parts[2]


_NAME = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")


def dataset_name_from_id(dataset_id: int) -> str:
    """Find the unique ``DatasetXXX_*`` folder with this id in the raw, preprocessed or results folder."""
    found: dict[str, list[Path]] = {}
    searched = []
    for kind in ("raw", "preprocessed", "results"):
        base = _folder(kind, create=False)
        searched.append(f"{ENV_VARIABLES[kind]}={base}")
        if not base.is_dir():
            continue
        for child in base.iterdir():
            m = _NAME.match(child.name)
            if child.is_dir() and m and int(m.group(1)) == dataset_id:
                found.setdefault(child.name, []).append(child)
    if not found:
        raise PathError(f"no folder Dataset{dataset_id:03d}_* found (searched {', '.join(searched)}). "
                        "Check the id, or set the environment variables to where your data lives.")
    if len(found) > 1:
        listing = "; ".join(f"{k} in {', '.join(str(p.parent) for p in v)}" for k, v in sorted(found.items()))
        raise PathError(f"dataset id {dataset_id} is ambiguous: {listing}. Pass the full name instead, "
                        "or rename one of the folders.")
    return next(iter(found))


def resolve_dataset_name(identifier: str | int) -> str:
    """``1``, ``"1"``, ``"001"`` or ``"Dataset001_BrainT1"`` → ``"Dataset001_BrainT1"``."""
    text = str(identifier).strip()
    if text.isdigit():
        return dataset_name_from_id(int(text))
    if _NAME.match(text):
        return text
    raise PathError(f"'{identifier}' is neither a dataset id (e.g. 1) nor a dataset name "
                    "(DatasetXXX_Name, three digits then an underscore).")


def make_dataset_name(dataset_id: int, name: str) -> str:
    """``(1, "BrainT1")`` → ``"Dataset001_BrainT1"``."""
    if not 0 <= dataset_id <= 999:
        raise ValueError(f"dataset ids run from 0 to 999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"
