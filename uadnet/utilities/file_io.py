"""Atomic writes: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def save_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Write JSON atomically (numpy scalars and arrays become plain numbers and lists)."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, default=_to_builtin)
        f.write("\n")


def load_json(path: str | os.PathLike) -> Any:
    """Read JSON, naming the file in the error when it is malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}). Fix the file or delete it to regenerate it.") from e


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """``np.save`` atomically."""
    with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
