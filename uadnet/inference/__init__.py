"""Prediction: loading trained folds, sliding-window scoring of raw cases, export on the input grid.

``from uadnet.inference import UadnetPredictor`` is the Python API (:mod:`uadnet.inference.api`, imported lazily).
"""

from __future__ import annotations

from typing import Any

_API = ("UadnetPredictor", "CasePrediction", "properties_from_spacing")


def __getattr__(name: str) -> Any:
    if name in _API:
        from uadnet.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'uadnet.inference' has no attribute '{name}'")
