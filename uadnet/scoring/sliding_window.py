"""Sliding-window patch prediction over a preprocessed volume (nnU-Net style), for validation and prediction.

Volumes are ``(c, z, y, x)`` float arrays in voxels (preprocessed, in [0, 1], background 0). A 2D configuration
has ``patch_size`` ``(y, x)`` and treats every z-slice as an image (internally a ``(1, y, x)`` tile, so tiles of
several slices share a batch); a 3D configuration has ``patch_size`` ``(z, y, x)``. Overlapping tile predictions
are averaged with a Gaussian importance map that down-weights tile borders.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from tqdm import tqdm


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in sizes)
    if any(s != t for s, t in zip(out, sizes)) or any(s < 1 for s in out):
        raise ValueError(f"{name} must be positive integers, got {tuple(sizes)}")
    return out


def _check_step_size(step_size: float) -> float:
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1] (a fraction of the patch size), got {step_size}")
    return float(step_size)


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Float32 weight map of shape ``patch_size`` (voxels, any axis order) for blending overlapping tiles.

    An analytic separable Gaussian centred in the patch (at ``(n - 1) / 2`` per axis, so the map is mirror
    symmetric) with ``σ = sigma_scale × n`` voxels per axis, normalised to max 1. Values that underflow to 0 are
    replaced by the smallest nonzero value, so every voxel of a predicted tile has a positive weight.
    """
    patch_size = _check_sizes("patch_size", patch_size)
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    result = np.ones((), dtype=np.float64)
    for n in patch_size:
        d = np.arange(n, dtype=np.float64) - (n - 1) / 2
        g = np.exp(-0.5 * (d / (sigma_scale * n)) ** 2)
        result = np.multiply.outer(result, g / g.max())
    result = result.astype(np.float32)
    nonzero = result > 0
    if not nonzero.all():
        result[~nonzero] = result[nonzero].min()
    return result


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Per axis, the start indices (voxels) of the tiles covering ``image_size`` with ``patch_size`` tiles.

    Requires ``image_size >= patch_size`` on every axis. The number of tiles per axis is
    ``ceil((image - patch) / (step_size × patch)) + 1``, spread evenly (rounded) from 0 to ``image - patch``,
    so consecutive tiles overlap by at least ``(1 - step_size) × patch`` (nnU-Net's
    ``compute_steps_for_sliding_window``).
    """
    image_size = _check_sizes("image_size", image_size)
    patch_size = _check_sizes("patch_size", patch_size)
    step_size = _check_step_size(step_size)
    if len(image_size) != len(patch_size):
        raise ValueError(f"image_size {image_size} and patch_size {patch_size} differ in dimensionality")
    if any(i < p for i, p in zip(image_size, patch_size)):
        raise ValueError(f"image_size {image_size} must be >= patch_size {patch_size} on every axis (pad first)")
    starts = []
    for i, p in zip(image_size, patch_size):
        max_start = i - p
        num_steps = math.ceil(max_start / (step_size * p)) + 1
        if num_steps > 1:
            actual = max_start / (num_steps - 1)
            starts.append([round(actual * k) for k in range(num_steps)])
        else:
            starts.append([0])
    return starts


def sliding_window_predict(volume: np.ndarray, predict: Callable[[torch.Tensor], torch.Tensor],
                           patch_size: Sequence[int], num_outputs: int, step_size: float = 0.5,
                           sigma_scale: float = 0.125, batch_size: int = 4, device: str | torch.device = "cpu",
                           foreground: np.ndarray | None = None, progress: bool = False,
                           description: str = "sliding window") -> np.ndarray:
    """Gaussian-weighted average of ``predict`` over overlapping tiles of ``volume``: float32 ``(num_outputs, z, y, x)``.

    ``volume``: ``(c, z, y, x)`` array (a memmap is fine: tiles are sliced out batch by batch). ``patch_size``:
    ``(y, x)`` (2D, per z-slice) or ``(z, y, x)`` (3D), in voxels. ``step_size``: tile stride as a fraction of
    the patch (0.5 = half-overlapping). ``predict`` receives a float32 tensor ``(b, c, *patch_size)`` on
    ``device`` (``b <= batch_size``; in 2D a batch may mix slices), is called under ``torch.no_grad()``, and
    must return ``(b, num_outputs, *patch_size)`` (any float dtype, any device; put a network in eval mode
    first). Axes smaller than the patch are zero-padded (centred) and the result is cropped back.
    ``foreground``: optional ``(z, y, x)`` mask; tiles without a foreground voxel are not predicted, and voxels
    that no predicted tile covers are 0. ``progress`` shows a tqdm bar over the predicted tiles.
    """
    patch_size = _check_sizes("patch_size", patch_size)
    if len(patch_size) not in (2, 3):
        raise ValueError(f"patch_size must have 2 (y, x) or 3 (z, y, x) entries, got {patch_size}")
    if getattr(volume, "ndim", None) != 4:
        raise ValueError(f"volume must be a (c, z, y, x) array, got shape {getattr(volume, 'shape', None)}")
    if min(volume.shape) < 1:
        raise ValueError(f"volume must not be empty, got shape {volume.shape}")
    step_size = _check_step_size(step_size)
    if isinstance(num_outputs, bool) or int(num_outputs) != num_outputs or num_outputs < 1:
        raise ValueError(f"num_outputs must be a positive integer, got {num_outputs}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    num_outputs, batch_size = int(num_outputs), int(batch_size)
    spatial_shape = tuple(volume.shape[1:])
    if foreground is not None and tuple(np.shape(foreground)) != spatial_shape:
        raise ValueError(f"foreground shape {tuple(np.shape(foreground))} does not match the volume's spatial "
                         f"shape {spatial_shape}")
    device = torch.device(device)
    # 2D: a (1, y, x) tile in (z, y, x) space; the singleton z axis is dropped before predict
    tile = patch_size if len(patch_size) == 3 else (1, *patch_size)
    weights_tile = gaussian_importance_map(patch_size, sigma_scale).reshape(tile)

    # zero-pad (centred) axes smaller than the tile; padding never touches the channel axis
    if any(s < t for s, t in zip(spatial_shape, tile)):
        volume, slicer = pad_nd_image(np.asarray(volume), tile, "constant", {"constant_values": 0},
                                      return_slicer=True)
        crop = tuple(slicer[1:])
        if foreground is not None:
            foreground = pad_nd_image(np.asarray(foreground), tile, "constant", {"constant_values": 0})
    else:
        crop = tuple(slice(0, s) for s in spatial_shape)
    padded_shape = tuple(volume.shape[1:])

    starts = tile_starts(padded_shape[-len(patch_size):], patch_size, step_size)
    if len(patch_size) == 2:
        starts = [list(range(padded_shape[0])), *starts]  # every slice once
    tiles = [tuple(slice(s, s + t) for s, t in zip(corner, tile)) for corner in itertools.product(*starts)]
    if foreground is not None:
        tiles = [sl for sl in tiles if np.any(foreground[sl])]

    prediction = np.zeros((num_outputs, *padded_shape), dtype=np.float32)
    weight_sum = np.zeros(padded_shape, dtype=np.float32)
    expected = (num_outputs, *patch_size)
    with torch.no_grad(), tqdm(total=len(tiles), desc=description, disable=not progress, unit="tile") as bar:
        for first in range(0, len(tiles), batch_size):
            batch_tiles = tiles[first:first + batch_size]
            batch = np.stack([np.asarray(volume[(slice(None), *sl)], dtype=np.float32) for sl in batch_tiles])
            if len(patch_size) == 2:
                batch = batch[:, :, 0]
            out = predict(torch.from_numpy(batch).to(device))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"predict must return a torch.Tensor, got {type(out).__name__}")
            if tuple(out.shape) != (len(batch_tiles), *expected):
                raise ValueError(f"predict returned shape {tuple(out.shape)} for input {tuple(batch.shape)}; "
                                 f"expected {(len(batch_tiles), *expected)}")
            out = out.detach().to("cpu", torch.float32).numpy()
            for sl, o in zip(batch_tiles, out):
                prediction[(slice(None), *sl)] += o.reshape(num_outputs, *tile) * weights_tile
                weight_sum[sl] += weights_tile
            bar.update(len(batch_tiles))

    covered = weight_sum > 0
    for channel in prediction:  # in place, one channel at a time, to keep peak memory low on big volumes
        np.divide(channel, weight_sum, out=channel, where=covered)
        channel[~covered] = 0
    return np.ascontiguousarray(prediction[(slice(None), *crop)])
