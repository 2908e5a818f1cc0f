"""What the two noise-based (DDPM, ε-prediction) methods share: the [0, 1] ↔ [−1, 1] mapping, training
timesteps, the ε loss and the seeded sampling generator.

Training randomness (timesteps, Gaussian noise) comes from torch's global generator, which the trainer seeds and
saves in its checkpoints (exact resume). All sampling noise at scoring time comes from a generator re-seeded with
``seed`` at every call (batch), so prediction is reproducible: the same input, patch size and batch size give the
same maps. A tile's noise is its row of the batch's draw, so it is not independent of the tiling; every fold of an
ensemble uses the same seed. The timestep is passed to the UNet as ``t / T`` (its embedding scales by 1000, i.e.
the usual DDPM timestep for T = 1000).
"""

from __future__ import annotations

import torch
from torch import Tensor

from uadnet.methods.base import loss_function


def to_model_range(x: Tensor) -> Tensor:
    """[0, 1] → the DDPM's [−1, 1]."""
    return 2 * x - 1


def to_image_range(x: Tensor) -> Tensor:
    """[−1, 1] → [0, 1], clipped."""
    return ((x + 1) / 2).clamp(0, 1)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (scoring noise)."""
    return torch.Generator().manual_seed(int(seed))


def epsilon_loss(eps: Tensor, target: Tensor, loss: str, weights: Tensor | None = None) -> Tensor:
    """Mean over samples of the per-sample ``loss`` (``mse``/``l1``) between predicted and true noise, optionally
    weighted per sample."""
    per_sample = loss_function(loss)(eps.float(), target, reduction="none").flatten(1).mean(1)
    return (per_sample * weights).mean() if weights is not None else per_sample.mean()


def training_timesteps(batch_size: int, total: int, device: torch.device) -> Tensor:
    """Uniform training timesteps ``(b,)`` from torch's global generator (seeded and checkpointed by the trainer)."""
    return torch.randint(0, total, (batch_size,)).to(device)
