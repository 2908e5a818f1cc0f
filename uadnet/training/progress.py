"""Training history: ``training_log.txt`` (appended line by line) and ``progress.png``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from uadnet.visualization.figures import save_figure

HISTORY_KEYS = ("iteration", "loss", "lr", "seconds")
VALIDATION_KEYS = ("val_iteration", "val_ap")


def empty_history() -> dict[str, list[float]]:
    return {k: [] for k in HISTORY_KEYS + VALIDATION_KEYS}


class TrainingLog:
    """Appends timestamped lines to ``training_log.txt`` (flushed each time, so a crash loses nothing)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp}  {message}\n")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_progress(history: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> None:
    """Four panels over iterations: training loss (raw and moving average), validation AP, learning rate,
    seconds per iteration (moving median would hide nothing here; a moving average is shown)."""
    it = np.asarray(history["iteration"], float)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    if len(it):
        loss = np.asarray(history["loss"], float)
        w = max(1, len(loss) // 50)
        ax.plot(it, loss, color="0.75", lw=0.6, label="loss")
        ax.plot(it[len(it) - len(_smooth(loss, w)):], _smooth(loss, w), color="C0", label=f"mean of {w}")
        ax.set_yscale("log")
        ax.legend()
    ax.set(title="training loss", xlabel="iteration")
    ax = axes[0, 1]
    vi, ap = history["val_iteration"], history["val_ap"]
    keep = [(i, a) for i, a in zip(vi, ap) if a is not None]
    if keep:
        ax.plot(*zip(*keep), "o-", color="C1")
    ax.set(title="validation pixel AP (synthetic anomalies)", xlabel="iteration", ylim=(0, 1))
    ax = axes[1, 0]
    ax.plot(it, history["lr"], color="C2")
    ax.set(title="learning rate", xlabel="iteration")
    ax = axes[1, 1]
    if len(it):
        sec = np.asarray(history["seconds"], float)
        w = max(1, len(sec) // 50)
        ax.plot(it[len(it) - len(_smooth(sec, w)):], _smooth(sec, w), color="C3")
    ax.set(title="seconds per iteration", xlabel="iteration")
    fig.suptitle(title)
    save_figure(fig, path)
