"""``dataset.json``: read, validate and write it.

Required: ``channel_names`` (``{"0": "T1", "1": "FLAIR"}``), ``file_ending`` (``".nii.gz"``), ``numTraining``.
Optional: ``name``, ``description``, ``overwrite_image_reader_writer`` (a reader name, e.g. ``"SimpleITKIO"``),
``labels`` and anything else an nnU-Net dataset carries (ignored). nnU-Net v1's ``modality`` is read as
``channel_names``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from uadnet.utilities.file_io import load_json, save_json


class DatasetJsonError(ValueError):
    """``dataset.json`` is missing or malformed."""


def load_dataset_json(dataset_folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``dataset_folder/dataset.json``; ``channel_names`` keys become ``"0", "1", ...``."""
    path = Path(dataset_folder) / "dataset.json"
    if not path.is_file():
        raise DatasetJsonError(f"{path} does not exist. Write one with uadnet.dataset.dataset_json."
                               "generate_dataset_json (see documentation/dataset_format.md).")
    try:
        d = load_json(path)
    except ValueError as e:
        raise DatasetJsonError(str(e)) from e
    if not isinstance(d, dict):
        raise DatasetJsonError(f"{path}: the top level must be an object.")
    if "channel_names" not in d and "modality" in d:
        d["channel_names"] = d["modality"]
    problems = []
    for key in ("channel_names", "file_ending", "numTraining"):
        if key not in d:
            problems.append(f"missing key '{key}'")
    if "channel_names" in d:
        cn = d["channel_names"]
        if not isinstance(cn, dict) or not cn:
            problems.append("'channel_names' must be a non-empty object like {\"0\": \"T1\"}")
        else:
            keys = sorted(int(k) for k in cn if str(k).isdigit())
            if keys != list(range(len(cn))):
                problems.append(f"'channel_names' keys must be 0, 1, ... {len(cn) - 1}; got {list(cn)}")
            d["channel_names"] = {str(k): str(cn[str(k)] if str(k) in cn else cn[k]) for k in keys}
    if "file_ending" in d and not (isinstance(d["file_ending"], str) and d["file_ending"].startswith(".")):
        problems.append(f"'file_ending' must start with a dot, like \".nii.gz\"; got {d['file_ending']!r}")
    if "numTraining" in d and not isinstance(d["numTraining"], int):
        problems.append(f"'numTraining' must be an integer; got {d['numTraining']!r}")
    if problems:
        raise DatasetJsonError(f"{path}: " + "; ".join(problems) + ". See documentation/dataset_format.md.")
    d.setdefault("name", Path(dataset_folder).name)
    return d


def generate_dataset_json(output_folder: str | os.PathLike, channel_names: dict[int | str, str],
                          file_ending: str, num_training_cases: int, dataset_name: str | None = None,
                          description: str | None = None, overwrite_image_reader_writer: str | None = None,
                          **extra: Any) -> Path:
    """Write ``output_folder/dataset.json`` and return its path.

    ``channel_names`` maps channel index to a name; the name picks the normalisation (``"CT"`` → CT scheme,
    ``"R"/"G"/"B"`` or ``"rgb"`` → /255, anything else → per-image percentile scaling).
    """
    d: dict[str, Any] = {
        "name": dataset_name or Path(output_folder).name,
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "file_ending": file_ending,
        "numTraining": int(num_training_cases),
    }
    if description:
        d["description"] = description
    if overwrite_image_reader_writer:
        d["overwrite_image_reader_writer"] = overwrite_image_reader_writer
    d.update(extra)
    path = Path(output_folder) / "dataset.json"
    save_json(d, path)
    return path
