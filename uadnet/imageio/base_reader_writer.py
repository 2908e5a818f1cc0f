"""The one interface every image format implements.

Arrays are always ``(c, z, y, x)``: channels first, then the slice axis, then rows and columns. A 2D image is
a one-slice volume (``z == 1``) whose slice spacing is ``DUMMY_SLICE_SPACING``. ``properties`` is a
JSON-serialisable dict with at least ``spacing`` (mm, ``(z, y, x)`` order) plus whatever the format needs to
write an array back onto exactly the same grid.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

PathLike = str | os.PathLike
Properties = dict[str, Any]

DUMMY_SLICE_SPACING = 999.0  # mm; marks "no slice axis" (2D images), far larger than any real spacing


class ImageReadError(RuntimeError):
    """A file cannot be read, or the files of one case do not fit together."""


def require_finite(array: np.ndarray, paths: Sequence[PathLike]) -> None:
    """``ImageReadError`` naming the files when ``array`` (read from ``paths``) holds NaN or Inf values."""
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        names = ", ".join(str(p) for p in paths)
        raise ImageReadError(f"{names}: contains {n_nan} NaN and {array.size - int(finite.sum()) - n_nan} Inf "
                             "values; replace them with valid intensities (e.g. np.nan_to_num) and save the image "
                             "again (uadnet_plan_and_preprocess --verify_dataset_integrity lists every such file)")


class BaseReaderWriter(ABC):
    """Read images as ``(c, z, y, x)`` float32 arrays and write arrays back with the original geometry."""

    #: file endings (lower case, with the dot) this reader handles, e.g. ``(".nii.gz", ".nii")``
    supported_file_endings: tuple[str, ...] = ()

    @abstractmethod
    def read_images(self, paths: Sequence[PathLike]) -> tuple[np.ndarray, Properties]:
        """Read the channel files of one case; return ``(c, z, y, x)`` float32 and the case's properties.

        Raises ``ImageReadError`` naming the file when a file is unreadable or channels disagree in geometry.
        """

    def read_seg(self, path: PathLike) -> tuple[np.ndarray, Properties]:
        """Read a mask/label file; ``(1, z, y, x)`` (values as stored, float32)."""
        return self.read_images([path])

    @abstractmethod
    def write(self, array: np.ndarray, path: PathLike, properties: Properties) -> None:
        """Write ``array`` (``(z, y, x)`` or ``(c, z, y, x)``) to ``path`` on the grid given by ``properties``."""

    def output_file_ending(self, input_file_ending: str) -> str:
        """The ending to write outputs with for inputs of ``input_file_ending`` (usually the same)."""
        return input_file_ending

    @classmethod
    def handles(cls, file_ending: str) -> bool:
        return file_ending.lower() in cls.supported_file_endings
