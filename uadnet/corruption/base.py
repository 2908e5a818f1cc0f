"""The interface every corruption family implements.

A corruption is a small deterministic callable::

    corrupted = family(image, foreground, rng, spacing)

``image``: ``(c, z, y, x)`` float32 in [0, 1] (a 2D sample has ``z == 1``); ``foreground``: ``(z, y, x)`` bool;
``rng``: ``numpy.random.Generator`` (all randomness comes from it, so a seed fixes the output); ``spacing``:
``(z, y, x)`` mm (a 2D sample's slice spacing is ignored). Sizes in the parameters are in mm and converted
with the spacing. The input arrays are never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class Corrupted:
    """The result: the corrupted image, where it was changed and how strongly."""

    image: np.ndarray  # (c, z, y, x) float32 in [0, 1]
    mask: np.ndarray  # (z, y, x) float32 soft anomaly mask in [0, 1]; 0 outside the foreground
    severity: float  # α in [0, 1]; 0 means the image is returned unchanged
    noise: np.ndarray | None = None  # (c, z, y, x) float32: structured noise for noise-based methods (Synomaly)


class Corruption(Protocol):
    """Every family takes the same call: ``image`` (c, z, y, x) in [0, 1], ``foreground`` (z, y, x) bool, a seeded
    ``rng``, ``spacing`` (z, y, x) mm, and optionally another image of the dataset (``foreign``, (c, z', y', x'),
    with its ``foreign_foreground``) for families that transplant tissue; the others ignore it."""

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float], *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted: ...


def unchanged(image: np.ndarray) -> Corrupted:
    """The identity corruption (clean samples)."""
    return Corrupted(image.astype(np.float32, copy=True), np.zeros(image.shape[1:], np.float32), 0.0)


class Identity:
    """No corruption (``"none"``): every sample is returned clean, for methods trained on healthy images only."""

    @classmethod
    def from_plans(cls, plans: Any) -> Identity:
        return cls()

    def __call__(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), *, foreign: np.ndarray | None = None,
                 foreign_foreground: np.ndarray | None = None) -> Corrupted:
        return unchanged(image)


def severity_range_of(plan: Any) -> tuple[float, float]:
    """``(low, high)`` of α ~ U(low, high) from a ``CorruptionPlan``; other distributions are not implemented."""
    if plan.severity_distribution != "uniform":
        raise ValueError(f"corruption.severity_distribution '{plan.severity_distribution}' is not supported; use "
                         "'uniform' (with severity_range [low, high]) in uadnet_plans.json")
    low, high = (float(v) for v in plan.severity_range)
    if not 0 <= low <= high <= 1:
        raise ValueError(f"corruption.severity_range must satisfy 0 <= low <= high <= 1, got {plan.severity_range}")
    return low, high
