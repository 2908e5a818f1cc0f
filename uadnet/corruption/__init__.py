"""Synthetic anomaly library (stage 6): each family maps (image, foreground, rng, spacing) → ``Corrupted``.

The batchgenerators wrapper lives in ``uadnet.corruption.transforms`` (not imported here, to keep this light).
"""

from uadnet.corruption.base import Corrupted, Corruption, unchanged
from uadnet.corruption.dag import DAG
from uadnet.corruption.fpi import FPI
from uadnet.corruption.intensity_blobs import IntensityBlobs
from uadnet.corruption.many_tasks import ManyTasks
from uadnet.corruption.registry import CORRUPTIONS, build_corruption
from uadnet.corruption.shapes import random_shape
from uadnet.corruption.synomaly_noise import SynomalyNoise

__all__ = ["CORRUPTIONS", "DAG", "FPI", "Corrupted", "Corruption", "IntensityBlobs", "ManyTasks", "SynomalyNoise",
           "build_corruption", "random_shape", "unchanged"]
