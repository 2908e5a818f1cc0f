"""Embedding of a continuous conditioning value (severity α or normalised diffusion time) into a vector.

One convention everywhere: the condition lies in [0, 1], 0 = clean and 1 = most corrupted. Cold-diffusion
methods pass the severity α; DDPM methods pass ``t / num_train_timesteps``. :class:`ConditionEmbedding`
multiplies the condition by ``scale`` (1000) before the sinusoids, so α uses the same frequencies as a DDPM
timestep t ∈ [0, 1000) and the two families share one embedding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer/DDPM sinusoidal features of a continuous value.

    ``t``: (b,) float, any range (e.g. a timestep in [0, 1000)). Returns (b, dim) float32:
    ``[cos(t·f_0..f_{h-1}), sin(t·f_0..f_{h-1})]`` with ``f_i = max_period^(-i/h)``, ``h = dim // 2``
    (zero-padded by one column when ``dim`` is odd). Always computed in float32, also under autocast.
    """
    if t.ndim != 1:
        raise ValueError(f"sinusoidal_embedding expects a (b,) tensor, got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return nn.functional.pad(emb, (0, dim % 2))


class ConditionEmbedding(nn.Module):
    """Condition c ∈ [0, 1] (b,) → sinusoid of ``c · scale`` → Linear → SiLU → Linear → (b, embedding_dim).

    ``scale`` = 1000 maps a severity α ∈ [0, 1] onto the frequency range of DDPM timesteps t ∈ [0, 1000).
    """

    def __init__(self, embedding_dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        self.embedding_dim, self.scale, self.max_period = embedding_dim, scale, max_period
        self.mlp = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.SiLU(),
                                 nn.Linear(embedding_dim, embedding_dim))

    def forward(self, condition: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(condition * self.scale, self.embedding_dim, self.max_period))
