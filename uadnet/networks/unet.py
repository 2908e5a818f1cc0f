"""Conditional residual UNet, 2D or 3D, with its topology taken from a :class:`~uadnet.plans.NetworkPlan`.

Every conv block is ``conv → GroupNorm → FiLM(condition) → SiLU`` plus a residual connection; the condition
embedding (see :mod:`uadnet.networks.embeddings`) is projected to a per-channel scale and shift in every block
("scale-shift norm"). Encoder stage ``s > 0`` starts with a strided conv (stride ``strides[s]``); the decoder
undoes it with a transposed conv of the same stride and concatenates the encoder features (skip). The output
is a 1x1 conv without activation: the network predicts whatever the method asks for (x̂₀ or ε).

Initialisation: PyTorch defaults everywhere, nothing zero-initialised. GroupNorm in every block keeps the
activations bounded at init, FiLM is applied as ``(1 + scale)`` so it starts near identity, and with a live
condition path from the first step the output depends on α at initialisation and gradients reach the
embedding MLP at once (a zero-initialised output conv or FiLM projection would block both until training
moves those weights off zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uadnet.networks.embeddings import ConditionEmbedding
from uadnet.plans import NetworkPlan, Plans


def group_count(channels: int, max_groups: int = 8) -> int:
    """Largest number of GroupNorm groups ≤ ``max_groups`` that divides ``channels``."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def _conv(dim: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dim]


def _conv_transpose(dim: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dim]


class ResidualBlock(nn.Module):
    """``x → skip(x) + SiLU(FiLM(GroupNorm(conv(x))))``; (b, in, *s) → (b, out, *s).

    ``skip`` is the identity when ``in == out`` and a 1x1 conv otherwise. FiLM: ``h · (1 + scale) + shift`` with
    ``(scale, shift) = Linear(SiLU(embedding))`` per channel; absent when ``embedding_dim`` is None.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: list[int],
                 embedding_dim: int | None) -> None:
        super().__init__()
        self.conv = _conv(dim)(in_channels, out_channels, kernel_size, padding=[k // 2 for k in kernel_size])
        self.norm = nn.GroupNorm(group_count(out_channels), out_channels)
        self.film = nn.Linear(embedding_dim, 2 * out_channels) if embedding_dim else None
        self.skip = nn.Identity() if in_channels == out_channels else _conv(dim)(in_channels, out_channels, 1)

    def forward(self, x: Tensor, embedding: Tensor | None) -> Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None:
            scale, shift = self.film(embedding).reshape(*embedding.shape[:1], -1, *[1] * (x.ndim - 2)).chunk(2, 1)
            h = h * (1 + scale) + shift
        return self.skip(x) + F.silu(h)


class Stage(nn.Module):
    """``n`` residual blocks at one resolution; the first maps ``in_channels`` to ``out_channels``."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: list[int], n: int,
                 embedding_dim: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualBlock(dim, in_channels if i == 0 else out_channels, out_channels, kernel_size, embedding_dim)
            for i in range(n))

    def forward(self, x: Tensor, embedding: Tensor | None) -> Tensor:
        for block in self.blocks:
            x = block(x, embedding)
        return x


class ConditionalUNet(nn.Module):
    """UNet ``f(x, c)``: x (b, in_channels, *spatial) and condition c (b,) in [0, 1] → (b, out_channels, *spatial).

    ``spatial`` is (y, x) for ``network.dim == 2`` and (z, y, x) for 3. Inputs whose size is not a multiple of
    :attr:`total_stride` are zero-padded at the end and the output cropped back, so the output always has the
    spatial shape of ``x``. With ``condition=False`` there is no embedding and ``forward`` takes ``None``.
    With ``residual=True`` the network returns ``x + UNet(x)`` and its output conv starts at a tenth of the default
    scale, so a restorer starts near the identity and spends its training on the corrections. With
    ``skip_connections=False`` the decoder sees only the upsampled bottleneck: a plain convolutional autoencoder.
    """

    def __init__(self, in_channels: int, out_channels: int, network: NetworkPlan, condition: bool = True,
                 residual: bool = False, skip_connections: bool = True) -> None:
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError("a residual UNet needs as many output as input channels")
        self.residual, self.skip_connections = residual, skip_connections
        dim, feats, kernels, strides = network.dim, network.features_per_stage, network.kernel_sizes, network.strides
        if dim not in (2, 3):
            raise ValueError(f"network.dim must be 2 or 3, got {dim}")
        if not (len(feats) == len(kernels) == len(strides)) or any(s != 1 for s in strides[0]):
            raise ValueError("network plan needs one feature count, kernel and stride per stage and strides[0] "
                             f"all ones; got features {feats}, kernels {kernels}, strides {strides}")
        if any(len(k) != dim or len(s) != dim for k, s in zip(kernels, strides)):
            raise ValueError(f"kernel sizes and strides must have {dim} entries each for a {dim}D network")
        self.dim, self.in_channels, self.out_channels = dim, in_channels, out_channels
        self.total_stride = [math.prod(s[a] for s in strides) for a in range(dim)]
        emb = network.embedding_dim if condition else None
        self.embedding = ConditionEmbedding(network.embedding_dim) if condition else None
        n = network.n_conv_per_stage
        self.encoder = nn.ModuleList([Stage(dim, in_channels, feats[0], kernels[0], n, emb)])
        self.down = nn.ModuleList()
        for s in range(1, len(feats)):
            self.down.append(_conv(dim)(feats[s - 1], feats[s], kernels[s], stride=strides[s],
                                        padding=[k // 2 for k in kernels[s]]))
            self.encoder.append(Stage(dim, feats[s], feats[s], kernels[s], n, emb))
        self.up, self.decoder = nn.ModuleList(), nn.ModuleList()
        for s in range(len(feats) - 2, -1, -1):
            self.up.append(_conv_transpose(dim)(feats[s + 1], feats[s], strides[s + 1], stride=strides[s + 1]))
            self.decoder.append(Stage(dim, (2 if skip_connections else 1) * feats[s], feats[s], kernels[s], n, emb))
        self.output = _conv(dim)(feats[0], out_channels, 1)
        if residual:  # start near the identity x̂ = x; small, not zero, so every layer gets gradients at once
            with torch.no_grad():
                self.output.weight.mul_(0.1)
                self.output.bias.zero_()

    @classmethod
    def from_plans(cls, plans: Plans, configuration: str | None, in_channels: int, out_channels: int,
                   condition: bool = True, residual: bool = False, skip_connections: bool = True) -> ConditionalUNet:
        """Build from ``plans.configuration(configuration).network`` (``None``: the default configuration)."""
        return cls(in_channels, out_channels, plans.configuration(configuration).network, condition, residual,
                   skip_connections)

    def forward(self, x: Tensor, condition: Tensor | float | None = None) -> Tensor:
        """x (b, c_in, *spatial); condition (b,) or scalar float in [0, 1] (0 clean, 1 most corrupted)."""
        if x.ndim != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (b, {self.in_channels}, {'z, ' * (self.dim - 2)}y, x), "
                             f"got {tuple(x.shape)}")
        if self.embedding is None:
            if condition is not None:
                raise ValueError("this network was built with condition=False; call it with condition=None")
            embedding = None
        else:
            if condition is None:
                raise ValueError("this network is conditional: pass a (b,) condition in [0, 1]")
            c = torch.as_tensor(condition, dtype=torch.float32, device=x.device)
            c = c.expand(x.shape[0]) if c.ndim == 0 else c
            if c.shape != (x.shape[0],):
                raise ValueError(f"condition must have shape ({x.shape[0]},), got {tuple(c.shape)}")
            embedding = F.silu(self.embedding(c))
        spatial = x.shape[2:]
        pad = [(-n) % t for n, t in zip(spatial, self.total_stride)]
        if any(pad):
            x = F.pad(x, [p for q in reversed(pad) for p in (0, q)])
        inputs = x
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x if s == 0 else self.down[s - 1](x), embedding)
            skips.append(x)
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips[:-1])):
            x = stage(torch.cat([up(x), skip], 1) if self.skip_connections else up(x), embedding)
        x = self.output(x)
        if self.residual:
            x = x + inputs
        return x[(..., *(slice(0, n) for n in spatial))] if any(pad) else x
