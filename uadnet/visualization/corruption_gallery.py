"""A gallery of synthetic anomalies on preprocessed data: what a restorer will be taught."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from uadnet.visualization.figures import plt, save_figure


def _sample(folder: Path, case: str, dim: int, patch: Sequence[int], rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """A training sample: a foreground slice (2D, (c, 1, y, x)) or a patch around the foreground (3D)."""
    data = np.load(folder / f"{case}.npy", mmap_mode="r")
    fg = np.load(folder / f"{case}_fg.npy", mmap_mode="r").astype(bool)
    if dim == 2:
        counts = fg.reshape(fg.shape[0], -1).sum(1)
        z = int(rng.choice(np.flatnonzero(counts >= 0.5 * counts.max())))
        return np.array(data[:, z: z + 1], np.float32), np.array(fg[z: z + 1])
    if not fg.any():
        raise ValueError(f"{folder / case}_fg.npy has no foreground voxels; re-run uadnet_plan_and_preprocess")
    centre = np.argwhere(fg)[rng.integers(int(fg.sum()))]
    start = [int(np.clip(c - p // 2, 0, max(s - p, 0))) for c, p, s in zip(centre, patch, fg.shape)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return np.array(data[(slice(None), *sl)], np.float32), np.array(fg[sl])


def plot_corruption_gallery(folder: str | os.PathLike, cases: Sequence[str], corruption: Callable, dim: int,
                            patch: Sequence[int], spacing: Sequence[float], path: str | os.PathLike, title: str,
                            n: int = 16, seed: int = 0, channel: int = 0) -> None:
    """``n`` rows of (image, corrupted, anomaly mask) for random samples of the preprocessed ``cases``.

    3D samples are shown through the slice where the anomaly mask is largest.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    params = inspect.signature(corruption).parameters
    takes_foreign, takes_foreign_fg = "foreign" in params, "foreign_foreground" in params
    cols = 4
    fig, axes = plt.subplots(n, cols, figsize=(2.4 * cols, 2.4 * n), squeeze=False)
    for row in range(n):
        image, fg = _sample(folder, str(rng.choice(cases)), dim, patch, rng)
        foreign, foreign_fg = _sample(folder, str(rng.choice(cases)), dim, patch, rng)
        if foreign.shape != image.shape:
            foreign, foreign_fg = None, None
        extra = {"foreign": foreign} if takes_foreign else {}
        if takes_foreign_fg:
            extra["foreign_foreground"] = foreign_fg
        out = corruption(image, fg, rng, spacing, **extra)
        z = int(np.argmax(out.mask.reshape(out.mask.shape[0], -1).sum(1)))
        diff = np.abs(out.image[channel, z] - image[channel, z])
        panels = [(image[channel, z], "image", "gray", (0, 1)), (out.image[channel, z], f"α = {out.severity:.2f}",
                                                                   "gray", (0, 1)),
                  (out.mask[z], "anomaly mask", "magma", (0, 1)), (diff, "|change|", "viridis", (0, max(diff.max(), 1e-3)))]
        for ax, (arr, name, cmap, lim) in zip(axes[row], panels):
            ax.imshow(arr, cmap=cmap, vmin=lim[0], vmax=lim[1], interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=60)
