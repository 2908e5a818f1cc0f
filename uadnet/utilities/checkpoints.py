"""Checkpoints: atomic writes, a previous copy kept, loading with ``weights_only=True``.

``checkpoint_latest.pth`` is written to a temporary file, fsynced, and renamed into place after the old one has
been renamed to ``checkpoint_previous.pth``; a crash at any moment therefore leaves at least one complete
checkpoint. Contents are plain tensors, numbers, strings, lists and dicts (no pickled objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from uadnet.utilities.file_io import atomic_path

LATEST, PREVIOUS, FINAL, BEST = ("checkpoint_latest.pth", "checkpoint_previous.pth", "checkpoint_final.pth",
                                 "checkpoint_best.pth")
REQUIRED_KEYS = ("network", "iteration", "meta")


def per_checkpoint_file(name: str, checkpoint: str) -> str:
    """The fold file ``name`` (``calibration.json``, ``postprocessing.json``) made for ``checkpoint``: ``name``
    itself for checkpoint_final.pth, ``calibration_best.json`` for checkpoint_best.pth (``_<x>`` of checkpoint_<x>)."""
    if checkpoint == FINAL:
        return name
    stem, dot, ending = name.rpartition(".")
    return f"{stem}_{Path(checkpoint).stem.removeprefix('checkpoint_')}{dot}{ending}"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = False) -> None:
    """Write ``state`` atomically to ``path``; with ``keep_previous`` an existing readable file becomes
    ``checkpoint_previous.pth`` first (only after the new one is completely on disk; a broken one is replaced, so
    that it never pushes out the good previous copy)."""
    path = Path(path)
    with atomic_path(path, ".pth") as tmp:
        torch.save(state, tmp)
        if keep_previous and path.exists() and _readable(path):
            os.replace(path, path.with_name(PREVIOUS))


def _readable(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a truncated or foreign file raises :class:`CheckpointError` naming it."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError/zipfile errors for broken files
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a uadnet checkpoint (keys {REQUIRED_KEYS} missing)")
    return state


def newest_valid_checkpoint(folder: str | os.PathLike, names: tuple[str, ...] = (FINAL, LATEST, PREVIOUS)
                            ) -> tuple[dict[str, Any] | None, list[str]]:
    """The readable checkpoint among ``names`` in ``folder`` with the highest iteration (``None`` if there is
    none) and a list of problems met (unreadable files), so the caller can report them."""
    best, problems = None, []
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if best is None or state["iteration"] > best["iteration"]:
            best = state
            best["meta"] = {**best["meta"], "loaded_from": name}
    return best, problems
