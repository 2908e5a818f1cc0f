"""Run settings: the plans' values with the command line's overrides, resolved in one place.

The plans own every setting; a command-line flag only overrides it for one run. ``uadnet_train`` and
``uadnet_predict`` hand their flags to :func:`resolve_run_settings` (``None`` = "as planned") and read the result,
never the flags or the plans separately. The result records where each value came from (``plans``,
``command line``, or e.g. ``calibration`` for prediction, which scores as the thresholds were calibrated); it is
printed once when the run starts and stored with its outputs (training log and checkpoints, ``prediction.json``).
The plans themselves are never changed by an override, so folds trained with other flags keep identical plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from uadnet.plans import Plans
from uadnet.scoring.mirroring import check_mirror_axes
from uadnet.utilities.torch_utils import resolve_device

PRECISIONS = ("fp32", "bf16")


def _planned(plans: Plans, configuration: str | None) -> dict[str, Any]:
    """Every overridable setting with its planned value (``configurations.<c>.<section>.<key>``, ``compute.<key>``)."""
    cfg = plans.configuration(configuration)
    tp, inf = cfg.training, cfg.inference
    return {"device": plans.compute.device, "precision": plans.compute.precision, "compile": plans.compute.compile,
            "iterations": tp.iterations, "time_budget_minutes": tp.time_budget_minutes,
            "validation_every": tp.validation_every, "checkpoint_every": tp.checkpoint_every,
            "num_workers": tp.num_workers, "step_size": inf.step_size, "mirror_axes": list(inf.mirror_axes)}


def _check(name: str, value: Any) -> None:
    """Range checks of override values, naming the flag."""
    if value is None:
        return
    if name == "precision" and value not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {value!r}")
    if name == "step_size" and not 0 < value <= 1:
        raise ValueError(f"--step_size must be in (0, 1] (a fraction of the patch), got {value}")
    if name == "mirror_axes":
        check_mirror_axes(value)  # against the configuration's dimension: by the predictor
    if name in ("iterations", "epochs", "validation_every", "checkpoint_every") and value < 1:
        raise ValueError(f"--{name} must be at least 1, got {value}")
    if name == "num_workers" and value < 0:
        raise ValueError(f"--num_workers must be 0 or more, got {value}")
    if name == "time_budget_minutes" and value <= 0:
        raise ValueError(f"--time_budget must be positive (minutes), got {value}")


@dataclass(frozen=True)
class RunSettings:
    """Resolved values (``values[name]``) and their origin (``sources[name]``); ``device`` is the torch device the
    run uses (``values["device"]`` is what was asked for or planned, e.g. ``auto``)."""

    values: dict[str, Any]
    sources: dict[str, str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def overridden(self, name: str) -> bool:
        return self.sources.get(name, "").startswith("command line")

    def describe(self, names: tuple[str, ...] | None = None) -> str:
        """One line: ``name value (source)`` for ``names`` (default all), the device as resolved."""
        parts = []
        for name in names or tuple(self.values):
            value = str(self.device) if name == "device" else self.values[name]
            parts.append(f"{name} {value} ({self.sources[name]})")
        return "run settings: " + ", ".join(parts)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready ``{name: {"value": ..., "from": ...}}`` with the resolved device."""
        return {n: {"value": str(self.device) if n == "device" else v, "from": self.sources[n]}
                for n, v in self.values.items()}


def resolve_run_settings(plans: Plans, configuration: str | None, overrides: Mapping[str, Any],
                         defaults: Mapping[str, tuple[Any, str]] | None = None,
                         device: torch.device | None = None) -> RunSettings:
    """The plans' settings with ``overrides`` (flag name → value, ``None`` = not given) applied.

    ``defaults``: values that replace the plans' where no override is given, with their source (prediction uses
    the calibration's precision, step size and mirror axes). ``epochs`` (an override only) becomes ``iterations`` =
    epochs × validation_every; ``iterations`` and ``epochs`` exclude each other. An explicit length without
    ``time_budget_minutes`` drops the plans' time budget (the run is as long as asked). ``device``: the torch
    device already resolved from the same flags (it is resolved, with its warnings, only once).
    """
    unknown = set(overrides) - set(_planned(plans, configuration)) - {"epochs"}
    if unknown:
        raise ValueError(f"unknown run setting(s) {sorted(unknown)}")
    for name, value in overrides.items():
        _check(name, value)
    values, sources = {}, {}
    for name, planned in _planned(plans, configuration).items():
        if name not in overrides and not (defaults and name in defaults):
            continue
        values[name], sources[name] = planned, "plans"
        if defaults and name in defaults and defaults[name][0] is not None:
            values[name], sources[name] = defaults[name]
        if overrides.get(name) is not None:
            values[name], sources[name] = overrides[name], "command line"
    if overrides.get("epochs") is not None:
        if overrides.get("iterations") is not None:
            raise ValueError("give --iterations or --epochs, not both")
        values["iterations"] = int(overrides["epochs"]) * int(values["validation_every"])
        sources["iterations"] = f"command line (--epochs {overrides['epochs']})"
    explicit_length = overrides.get("iterations") is not None or overrides.get("epochs") is not None
    if "time_budget_minutes" in values and explicit_length and overrides.get("time_budget_minutes") is None:
        values["time_budget_minutes"], sources["time_budget_minutes"] = None, "command line (explicit length)"
    if device is None:
        device = resolve_device(overrides.get("device"), plans.compute.device) if "device" in values else \
            torch.device("cpu")
    return RunSettings(values, sources, device)
