"""``dataset_fingerprint.png``: intensity histograms with the codebook, spacings and foreground extents."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from uadnet.plans import Plans
from uadnet.visualization.figures import plt, save_figure


def plot_fingerprint(fingerprint: dict[str, Any], plans: Plans, path: str | os.PathLike) -> None:
    """One panel per channel (foreground histogram as the plans normalise it + the plans' codebook), then spacing
    and extent."""
    channels = fingerprint["channel_names"]
    cases = fingerprint["cases"]
    fig, axes = plt.subplots(1, len(channels) + 2, figsize=(4 * (len(channels) + 2), 3.4), squeeze=False)
    axes = axes[0]
    for ax, (ch, name) in zip(axes, channels.items()):
        norm = plans.normalization[int(ch)]
        hist = np.asarray(fingerprint["normalized_histograms"][ch].get(norm.scheme, []), float)
        if hist.size:
            if hist.size % 64 == 0:
                hist = hist.reshape(64, -1).sum(1)  # 64 bars
            edges = np.linspace(0, norm.high_maps_to, hist.size + 1)
            ax.bar(edges[:-1], hist / max(hist.sum(), 1), width=np.diff(edges), align="edge", color="0.6")
        for c in plans.corruption.intensity_codebook[int(ch)]:
            ax.axvline(c, color="tab:red", lw=1.5)
        ax.set_title(f"channel {ch} '{name}' ({norm.scheme}, codebook in red)", fontsize=9)
        ax.set_xlabel("normalised foreground intensity")
        ax.set_ylabel("fraction of voxels")
    spacing = np.array([c["spacing"] for c in cases])
    ax = axes[-2]
    for a, label in enumerate("zyx"):
        ax.plot(np.arange(len(cases)), spacing[:, a], "o", ms=3, label=f"{label} (median {np.median(spacing[:, a]):g})")
    ax.set_yscale("log")
    ax.set_title(f"spacing of {len(cases)} training cases", fontsize=9)
    ax.set_xlabel("case")
    ax.set_ylabel("mm (file axis order z, y, x)")
    ax.legend(fontsize=7)
    extent = np.array([c["foreground_extent_mm"] for c in cases])
    ax = axes[-1]
    ax.boxplot([extent[:, a] for a in range(3)], tick_labels=list("zyx"))
    ax.set_title("foreground extent", fontsize=9)
    ax.set_ylabel("mm (0: one-voxel axis)")
    fig.suptitle(f"{fingerprint['dataset_name']}: red lines = intensity codebook (k-means centroids)", fontsize=10)
    save_figure(fig, path, dpi=100)
