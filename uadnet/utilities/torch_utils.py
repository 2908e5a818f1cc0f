"""Device and precision helpers shared by training and inference."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "bf16")


def best_available_device() -> str:
    """``cuda`` when torch sees a CUDA GPU, else ``mps`` when available, else ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(name: str | None, planned: str | None = None) -> torch.device:
    """The device to run on: ``name`` (``cpu``, ``cuda[:i]``, ``mps`` or ``auto``: the best available) when given,
    with a clear error when it is not available here; else the plans' device ``planned``, or the best available
    one with a warning when the plans name a device this machine lacks (e.g. plans made on a GPU machine)."""
    if name is None:
        planned = planned or "auto"
        resolved = best_available_device() if planned == "auto" else planned
        if planned != "auto" and _unavailable(planned):
            resolved = best_available_device()
            print(f"WARNING: the plans were made for device {planned}, which this machine lacks; running on "
                  f"{resolved} (their patch and batch sizes were chosen for {planned}: re-plan here for a better fit)")
        return torch.device(resolved)
    if name == "auto":
        return torch.device(best_available_device())
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device '{name}'; choose auto, cpu, cuda or mps")
    if _unavailable(name):
        raise RuntimeError(f"--device {name} was asked for, but torch sees no {name.split(':')[0].upper()} device "
                           "here; use --device cpu (or auto)")
    return torch.device(name)


def _unavailable(name: str) -> bool:
    kind = name.split(":")[0]
    if kind == "cuda":
        return not torch.cuda.is_available()
    if kind == "mps":
        return not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return False


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``precision == "bf16"``; plain fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
