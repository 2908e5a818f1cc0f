"""The learning-rate schedule: a pure function of the iteration, so a resumed run continues it exactly."""

from __future__ import annotations

import math


def learning_rate(iteration: int, total: int, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 0 at ``total`` (or constant)."""
    if iteration < warmup:
        return base * (iteration + 1) / warmup
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"training.lr_schedule '{schedule}' is not supported; use 'cosine' or 'constant'")
    progress = (iteration - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
