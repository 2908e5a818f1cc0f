"""Whether two images lie on the same grid: one rule and one tolerance for every check in uadnet.

Used for the channel files of one case (reader), the cases of a dataset (integrity check, z-score baseline) and a
map against its label (evaluation). Arrays are (z, y, x); ``properties["spacing"]`` is (z, y, x) mm; SimpleITK
files also carry ``properties["sitk"]`` (size, spacing, origin in x, y, z order, direction cosines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GRID_TOLERANCE = 1e-3  # spacing: relative; origin: relative to max(|origin|, largest spacing); direction: absolute


def close(a: Any, b: Any, rtol: float = GRID_TOLERANCE, floor: float = 0.0) -> bool:
    """``|a - b| <= rtol * max(|a|, |b|, floor)`` element-wise (``floor`` keeps values near 0 from being exact)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False
    return bool(np.all(np.abs(a - b) <= rtol * np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)))


def sitk_geometry_mismatch(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """How two ``properties["sitk"]`` geometries differ (size, spacing, origin, direction), or ``None``."""
    if "size" in a and "size" in b and list(a["size"]) != list(b["size"]):
        return f"size {a['size']} vs {b['size']}"
    if not close(a["spacing"], b["spacing"]):
        return f"spacing {a['spacing']} vs {b['spacing']}"
    if not close(a["origin"], b["origin"], floor=float(max(a["spacing"]))):
        return f"origin {a['origin']} vs {b['origin']} mm"
    if not close(a["direction"], b["direction"], floor=1.0):
        return f"direction {a['direction']} vs {b['direction']}"
    return None


def grid_mismatch(shape_a: Sequence[int], props_a: dict[str, Any], shape_b: Sequence[int], props_b: dict[str, Any]
                  ) -> str | None:
    """How the grids differ: array shape (z, y, x), spacing (z, y, x) mm and, when both are SimpleITK files, origin
    and direction; ``None`` when they agree within ``GRID_TOLERANCE``."""
    if tuple(shape_a) != tuple(shape_b):
        return f"size (z, y, x) {tuple(shape_a)} vs {tuple(shape_b)}"
    if not close(props_a["spacing"], props_b["spacing"]):
        return f"spacing (z, y, x) {props_a['spacing']} vs {props_b['spacing']} mm"
    a, b = props_a.get("sitk"), props_b.get("sitk")
    if a is not None and b is not None:
        return sitk_geometry_mismatch(a, b)
    return None
