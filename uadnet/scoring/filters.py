"""Small differentiable-free image filters on torch batches, for scorers that run on any device.

Images are ``(b, c, *spatial)`` with 2 or 3 spatial axes; σ is in voxels and the same along every spatial axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel_1d(sigma: float, truncate: float = 3.0) -> Tensor:
    """Normalised 1D Gaussian of standard deviation ``sigma`` voxels, radius ``round(truncate · σ)`` (scipy's
    ``gaussian_filter`` convention); float64 (cast to the image's dtype where used)."""
    radius = max(1, int(truncate * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of every channel along every spatial axis, reflect-padded (replicate where a
    side is shorter than the radius). ``sigma <= 0`` returns ``x`` unchanged. Same shape and dtype as ``x``."""
    if sigma <= 0:
        return x
    dim = x.ndim - 2
    if dim not in (2, 3):
        raise ValueError(f"gaussian_blur expects (b, c, y, x) or (b, c, z, y, x), got {tuple(x.shape)}")
    b, c = x.shape[:2]
    kernel = gaussian_kernel_1d(sigma).to(device=x.device, dtype=x.dtype)
    radius = kernel.numel() // 2
    conv = F.conv2d if dim == 2 else F.conv3d
    out = x.reshape(b * c, 1, *x.shape[2:])
    for axis in range(dim):
        shape = [1, 1] + [1] * dim
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * dim
        pad[2 * (dim - 1 - axis)] = pad[2 * (dim - 1 - axis) + 1] = radius
        mode = "reflect" if out.shape[2 + axis] > radius else "replicate"
        out = conv(F.pad(out, pad, mode=mode), kernel.reshape(shape))
    return out.reshape(x.shape)


def ssim_map(x: Tensor, y: Tensor, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Local SSIM (Wang et al. 2004) with a Gaussian window of σ voxels, per channel: ``(b, c, *spatial)``.

    ``C1 = (0.01·L)²``, ``C2 = (0.03·L)²`` with ``L = data_range``; values in [−1, 1], 1 where the images agree.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = gaussian_blur(x, sigma), gaussian_blur(y, sigma)
    vx = gaussian_blur(x * x, sigma) - mx * mx
    vy = gaussian_blur(y * y, sigma) - my * my
    cov = gaussian_blur(x * y, sigma) - mx * my
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
