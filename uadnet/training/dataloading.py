"""Training data: memory-mapped preprocessed cases → foreground patches → augmentation → corruption.

Axis order is ``(z, y, x)`` throughout (``(y, x)`` for 2D patches). A case on disk is
``<folder>/<case>.npy`` (c, z, y, x) float32 in [0, 1] and ``<folder>/<case>_fg.npy`` (z, y, x) uint8.
Batches from :func:`make_training_pipeline` hold ``data`` (corrupted, b, c, *patch, float32),
``target`` (clean), ``anomaly_mask`` (b, 1, *patch) float32, ``severity`` (b,) float32,
``foreground`` (b, 1, *patch) uint8 and ``keys`` (case ids).

Randomness is addressed by batch index: batch ``i`` is a pure function of ``(seed, i)``. The loader draws its
samples from ``np.random.default_rng([seed, i])`` and adds ``"batch_index"`` to the batch; :class:`SeededCompose`
seeds batchgenerators' global RNGs from ``(seed, i)`` around each call, and the corruption transform derives its
generator from ``(seed, i)`` too. With ``w`` workers, worker ``t`` makes batches ``start + t, start + t + w, …`` and
the augmenter returns them in round-robin order, so the stream is the same for any number of workers, and a
resumed run (``start_batch = iterations done``) continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import os
import random
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ClipValueRange,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RenameTransform

from uadnet.corruption.base import Corruption
from uadnet.corruption.transforms import CorruptionTransform
from uadnet.plans import Plans

OPEN_CASES = 64  # memory maps kept open per process (least recently used closed first)
MAX_FOREGROUND_LOCATIONS = 10000  # per case, sampled once; a uniform pick among them ≈ a uniform foreground voxel


class PreprocessedDataset:
    """Memory-mapped access to preprocessed training cases of one configuration folder."""

    def __init__(self, folder: str | os.PathLike, case_ids: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self._open: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        if not self.case_ids:
            raise ValueError(f"no training cases given for {self.folder}")
        for case in self.case_ids:
            for path in (self._data_path(case), self._fg_path(case)):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"preprocessed file {path} is missing: run uadnet_plan_and_preprocess for this dataset and "
                        "configuration (it writes <case>.npy and <case>_fg.npy)")

    def _data_path(self, case: str) -> Path:
        return self.folder / f"{case}.npy"

    def _fg_path(self, case: str) -> Path:
        return self.folder / f"{case}_fg.npy"

    def __len__(self) -> int:
        return len(self.case_ids)

    def load(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """``(data (c, z, y, x) float32, foreground (z, y, x) uint8)``, both read-only memory maps (the last
        ``OPEN_CASES`` stay open in each process)."""
        if case in self._open:
            self._open.move_to_end(case)
        else:
            self._open[case] = (np.load(self._data_path(case), mmap_mode="r"),
                                np.load(self._fg_path(case), mmap_mode="r"))
            if len(self._open) > OPEN_CASES:  # each map holds a file descriptor: stay far below `ulimit -n`
                self._open.popitem(last=False)
        return self._open[case]


def _exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """End this worker process as soon as its parent ``parent_pid`` is gone (then it is re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(0)


class UADDataLoader(SlimDataLoaderBase):
    """Endless batches of foreground patches (no augmentation).

    Sampling: a case uniformly at random, then a voxel uniformly among (up to ``MAX_FOREGROUND_LOCATIONS``
    subsampled) foreground voxels — so in 2D a slice is chosen with probability proportional to its number of
    foreground voxels — then the patch is centred on that voxel shifted by a uniform jitter of up to a quarter
    patch per axis (the voxel stays inside the patch). Out-of-image parts are padded with 0. A case without
    foreground is sampled uniformly. Returns ``{"data": (b, c, *patch) float32, "foreground": (b, 1, *patch)
    uint8, "keys": list[str]}``; ``patch_size`` is ``(y, x)`` for ``dim == 2`` and ``(z, y, x)`` for 3.
    """

    def __init__(self, dataset: PreprocessedDataset, batch_size: int, patch_size: Sequence[int], dim: int,
                 seed: int = 0, num_threads_in_multithreaded: int = 1, start_batch: int = 0) -> None:
        super().__init__(dataset, batch_size, num_threads_in_multithreaded)
        if len(patch_size) != dim or dim not in (2, 3):
            raise ValueError(f"patch_size {list(patch_size)} does not match dim {dim}")
        self.dataset = dataset
        self.patch_size = tuple(int(p) for p in patch_size)
        self.dim = dim
        self.seed = int(seed)
        self.start_batch = int(start_batch)
        self.next_index = self.start_batch
        self.rng = np.random.default_rng([self.seed, self.next_index])
        self._locations: dict[str, np.ndarray] = {}
        data, _ = dataset.load(dataset.case_ids[0])
        self.num_channels = int(data.shape[0])
        self._parent_pid = os.getpid()

    def set_thread_id(self, thread_id: int) -> None:
        """Called in each worker by the augmenter: worker ``t`` makes batches ``start + t + k · workers``. In a
        worker process it also starts a watchdog that ends the worker when the trainer dies (even by ``kill -9``,
        which gives the augmenter no chance to stop its workers)."""
        super().set_thread_id(thread_id)
        self.next_index = self.start_batch + int(thread_id)
        if os.getpid() != self._parent_pid:
            threading.Thread(target=_exit_with_parent, args=(self._parent_pid,), daemon=True).start()

    def _foreground_locations(self, case: str, fg: np.ndarray) -> np.ndarray:
        """(n, 3) int32 ``(z, y, x)`` foreground voxels (a fixed per-case subsample; n == 0: no foreground)."""
        if case not in self._locations:
            loc = np.argwhere(np.asarray(fg) != 0).astype(np.int32)
            if len(loc) > MAX_FOREGROUND_LOCATIONS:
                pick = np.random.default_rng(zlib.crc32(case.encode())).choice(len(loc), MAX_FOREGROUND_LOCATIONS,
                                                                                replace=False)
                loc = loc[np.sort(pick)]
            self._locations[case] = loc
        return self._locations[case]

    def _sample(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        """One ``(data (c, *patch), foreground (1, *patch))`` patch of ``case``."""
        data, fg = self.dataset.load(case)
        loc = self._foreground_locations(case, fg)
        centre = loc[self.rng.integers(len(loc))] if len(loc) else np.array([self.rng.integers(s) for s in fg.shape])
        if self.dim == 2:
            data, fg, centre = data[:, centre[0]], fg[centre[0]], centre[1:]
        half = np.array(self.patch_size) // 2
        jitter = np.array([self.rng.integers(-(p // 4), p // 4 + 1) for p in self.patch_size])
        lo = centre + jitter - half
        bbox = [[int(a), int(a) + p] for a, p in zip(lo, self.patch_size)]
        return (crop_and_pad_nd(data, bbox, pad_value=0), crop_and_pad_nd(np.asarray(fg)[None], bbox, pad_value=0))

    def generate_train_batch(self) -> dict[str, Any]:
        index = self.next_index
        self.next_index += self.number_of_threads_in_multithreaded
        self.rng = np.random.default_rng([self.seed, index])
        cases = [self.dataset.case_ids[i] for i in self.rng.integers(len(self.dataset), size=self.batch_size)]
        data = np.empty((self.batch_size, self.num_channels, *self.patch_size), np.float32)
        fg = np.empty((self.batch_size, 1, *self.patch_size), np.uint8)
        for i, case in enumerate(cases):
            data[i], fg[i] = self._sample(case)
        return {"data": data, "foreground": fg, "keys": cases, "batch_index": index}


def batch_seed(seed: int, batch_index: int, stream: int = 0) -> int:
    """A 31-bit seed for stream ``stream`` of batch ``batch_index`` (independent of the process making it)."""
    return int(np.random.SeedSequence([int(seed), int(batch_index), int(stream)]).generate_state(1)[0] >> 1)


class SeededCompose(Compose):
    """``Compose`` with reproducible global randomness: batchgenerators draws from numpy's global RNG and, for
    the Gaussian-noise variance, Python's ``random``. Around each call both global states are seeded from
    ``(seed, data_dict["batch_index"])`` (a running counter when the batch has no index) and afterwards restored,
    so the caller's RNGs are untouched and a batch's augmentation does not depend on the process making it."""

    def __init__(self, transforms: list[AbstractTransform], seed: int) -> None:
        super().__init__(transforms)
        self.seed = int(seed)
        self._calls = 0

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        index = data_dict.get("batch_index", self._calls)
        self._calls += 1
        outer_np, outer_py = np.random.get_state(), random.getstate()
        np.random.seed(batch_seed(self.seed, index))
        random.seed(batch_seed(self.seed, index, 1))
        try:
            return super().__call__(**data_dict)
        finally:
            np.random.set_state(outer_np)
            random.setstate(outer_py)


class _CastTransform(AbstractTransform):
    """Cast ``data_dict[key]`` to ``dtype`` (the spatial transform returns the foreground as float32)."""

    def __init__(self, key: str, dtype: Any) -> None:
        self.key, self.dtype = key, dtype

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data_dict[self.key] = np.asarray(data_dict[self.key]).astype(self.dtype)
        return data_dict


def training_transforms(plans: Plans, configuration: str | None, corruption: Corruption, seed: int = 0,
                        do_elastic: bool = False) -> SeededCompose:
    """Modest nnU-Net-style augmentation, clip to [0, 1], then the corruption.

    Spatial (foreground passed as ``seg``, nearest interpolation): rotation ±15° (3D: ±15° about every axis,
    only about z when the spacing is anisotropic > 3:1) with p 0.2, scaling 0.85–1.15 with p 0.2, constant-0
    border, optional elastic; mirroring on every axis; multiplicative brightness 0.85–1.15 (p 0.15); gamma
    0.8–1.25 keeping mean/std (p 0.15); Gaussian noise variance ≤ 0.005 (p 0.1); Gaussian blur σ 0.5–1 voxel
    (p 0.1). Then ``CorruptionTransform`` of ``corruption`` (the method's, e.g. ``method.corruption()``) with the
    configuration's spacing (mm) on the foreground.
    """
    cfg = plans.configuration(configuration)
    patch = [int(p) for p in cfg.patch_size]
    angle = np.deg2rad(15.0)
    spacing = [float(s) for s in cfg.spacing]
    if cfg.dim == 2:
        angles: dict[str, tuple[float, float]] = {"angle_x": (-angle, angle), "angle_y": (0, 0), "angle_z": (0, 0)}
    elif max(spacing) / min(spacing) > 3:
        angles = {"angle_x": (-angle, angle), "angle_y": (0, 0), "angle_z": (0, 0)}  # about z: in-plane only
    else:
        angles = {"angle_x": (-angle, angle), "angle_y": (-angle, angle), "angle_z": (-angle, angle)}
    corruption_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    transforms: list[AbstractTransform] = [
        RenameTransform("foreground", "seg", delete_old=True),
        SpatialTransform(patch, patch_center_dist_from_border=None, do_elastic_deform=do_elastic,
                         alpha=(0.0, 200.0), sigma=(9.0, 13.0), do_rotation=True, **angles, do_scale=True,
                         scale=(0.85, 1.15), border_mode_data="constant", border_cval_data=0, order_data=3,
                         border_mode_seg="constant", border_cval_seg=0, order_seg=0, random_crop=False,
                         p_el_per_sample=0.2, p_scale_per_sample=0.2, p_rot_per_sample=0.2),
        MirrorTransform(axes=tuple(range(cfg.dim))),
        BrightnessMultiplicativeTransform((0.85, 1.15), per_channel=True, p_per_sample=0.15),
        GammaTransform((0.8, 1.25), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.15),
        GaussianNoiseTransform(noise_variance=(0.0, 0.005), p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.1, p_per_channel=0.5),
        ClipValueRange(0.0, 1.0),
        RenameTransform("seg", "foreground", delete_old=True),
        _CastTransform("foreground", np.uint8),
        _CastTransform("data", np.float32),
        CorruptionTransform(corruption, spacing=spacing,
                            foreground_key="foreground", seed=corruption_seed),
    ]
    return SeededCompose(transforms, seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))


def make_training_pipeline(preprocessed_dataset_folder: str | os.PathLike, plans: Plans, configuration: str | None,
                           case_ids: Sequence[str], corruption: Corruption, num_workers: int = 0,
                           seed: int = 0, start_batch: int = 0) -> SingleThreadedAugmenter | MultiThreadedAugmenter:
    """Endless iterator of corrupted training batches (see the module docstring for the keys and shapes).

    ``preprocessed_dataset_folder``: ``<preprocessed>/<dataset>`` (the configuration's ``data_identifier``
    subfolder is read). ``num_workers == 0``: a ``SingleThreadedAugmenter``; otherwise a
    ``MultiThreadedAugmenter`` (call ``_finish()`` when done). The first batch is batch ``start_batch`` of the
    seeded stream (resume: the number of batches already consumed).
    """
    cfg = plans.configuration(configuration)
    dataset = PreprocessedDataset(Path(preprocessed_dataset_folder) / cfg.data_identifier, case_ids)
    loader = UADDataLoader(dataset, cfg.batch_size, cfg.patch_size, cfg.dim, seed=seed,
                           num_threads_in_multithreaded=max(num_workers, 1), start_batch=start_batch)
    transform = training_transforms(plans, configuration, corruption, seed=seed)
    if num_workers == 0:
        return SingleThreadedAugmenter(loader, transform)
    seeds = [int(s) for s in np.random.SeedSequence([seed, 3]).generate_state(num_workers)]
    return MultiThreadedAugmenter(loader, transform, num_workers, num_cached_per_queue=2, seeds=seeds)
