"""Test-time mirroring's axes, checked in one place (plans, run settings, prediction); no torch here, so the plans
schema can use it. The mirroring itself is :class:`uadnet.scoring.scorers.MirroredScorer`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_mirror_axes(axes: Sequence[Any], dim: int = 3) -> tuple[int, ...]:
    """``axes`` as a sorted tuple of distinct patch axes in ``range(dim)`` (2D (y, x): 0, 1; 3D (z, y, x): 0-2);
    ``ValueError`` naming them otherwise."""
    ok = isinstance(axes, (list, tuple)) and all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
    if not ok or len(set(axes)) != len(axes) or any(not 0 <= a < dim for a in axes):
        raise ValueError(f"mirror axes must be distinct patch axes in 0..{dim - 1}, got {axes!r}")
    return tuple(sorted(axes))
