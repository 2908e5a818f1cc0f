"""Saving figures: the Agg backend (no display needed) and atomic PNG writes."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from uadnet.utilities.file_io import atomic_path


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """``tight_layout``, write ``path`` atomically as PNG, close the figure."""
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
