"""A batchgenerators transform that applies a corruption per sample inside the data-loading workers."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform


class CorruptionTransform(AbstractTransform):
    """Corrupt ``data_dict[data_key]`` (b, c, z, y, x) or 2D (b, c, y, x), float in [0, 1], per sample.

    Adds ``"target"`` (the clean batch, float32), ``"anomaly_mask"`` (b, 1, *spatial) float32 and ``"severity"``
    (b,) float32, and replaces ``data_key`` with the corrupted batch; a corruption that returns structured noise
    (``Corrupted.noise``, e.g. Synomaly) adds ``"noise"`` (b, c, *spatial) float32. ``foreground_key``: (b, *spatial) or
    (b, 1, *spatial), nonzero = foreground; if absent, everything is foreground. ``spacing``: (z, y, x) or, for
    2D batches, (y, x) mm. The foreign image of sample i is sample (i + 1) mod b (none for b == 1: the corruption
    then uses a shifted copy of the sample itself). ``seed``: own ``np.random.Generator``; with None it is seeded
    lazily, on the first call, from numpy's global RNG (which batchgenerators' augmenters seed per worker).
    When the batch carries ``"batch_index"`` and ``seed`` is set, the generator is ``default_rng([seed,
    batch_index])`` instead: batch i is then corrupted the same way in any process (exact resume).
    """

    def __init__(self, corruption: Any, data_key: str = "data", foreground_key: str = "foreground",
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), seed: int | None = None) -> None:
        self.corruption = corruption
        self.data_key = data_key
        self.foreground_key = foreground_key
        self.spacing = tuple(float(s) for s in spacing)
        self.seed = seed
        self.rng: np.random.Generator | None = None
        self._owner_pid = os.getpid()  # the process that built the transform
        self._rng_pid: int | None = None
        params = inspect.signature(corruption).parameters
        self._takes_foreign = "foreign" in params
        self._takes_foreign_fg = "foreign_foreground" in params

    def _generator(self) -> np.random.Generator:
        """One generator per process: ``seed`` in the building process; in a worker (which holds a copy),
        ``[seed, a draw from numpy's global RNG]``, which batchgenerators seeds differently per worker, so
        workers never repeat each other's corruptions and a seeded run is reproducible."""
        pid = os.getpid()
        if self.rng is None or self._rng_pid != pid:
            if pid == self._owner_pid and self.seed is not None:
                self.rng = np.random.default_rng(self.seed)
            else:
                worker = int(np.random.randint(0, 2**31 - 1))
                self.rng = np.random.default_rng([self.seed, worker] if self.seed is not None else worker)
            self._rng_pid = pid
        return self.rng

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        if self.seed is not None and "batch_index" in data_dict:
            rng = np.random.default_rng([self.seed, int(data_dict["batch_index"])])
        else:
            rng = self._generator()
        data = np.asarray(data_dict[self.data_key], dtype=np.float32)
        is2d = data.ndim == 4
        vol = data[:, :, None] if is2d else data  # (b, c, z, y, x)
        b = vol.shape[0]
        fg = data_dict.get(self.foreground_key)
        if fg is None:
            fg = np.ones((b, *vol.shape[2:]), bool)
        else:
            fg = np.asarray(fg)
            fg = (fg[:, 0] if fg.ndim == data.ndim else fg) != 0
            fg = fg[:, None] if is2d else fg
        spacing = (1.0, *self.spacing[-2:]) if is2d else self.spacing
        out, masks, sev = np.empty_like(vol), np.empty((b, 1, *vol.shape[2:]), np.float32), np.empty(b, np.float32)
        noise: np.ndarray | None = None
        with_noise = 0
        for i in range(b):
            j = (i + 1) % b
            kw = {"foreign": vol[j] if b > 1 else None} if self._takes_foreign else {}
            if self._takes_foreign_fg:
                kw["foreign_foreground"] = fg[j] if b > 1 else None
            res = self.corruption(vol[i], fg[i], rng, spacing, **kw)
            out[i], masks[i, 0], sev[i] = res.image, res.mask, res.severity
            if res.noise is not None:
                noise = np.empty_like(vol) if noise is None else noise
                noise[i] = res.noise
                with_noise += 1
        if noise is not None:
            if with_noise != b:
                raise ValueError(f"the corruption returned structured noise for {with_noise} of {b} samples; it must "
                                 "return it for all or none")
            data_dict["noise"] = noise[:, :, 0] if is2d else noise
        if is2d:
            out, masks = out[:, :, 0], masks[:, :, 0]
        data_dict["target"] = data.copy()
        data_dict[self.data_key] = out
        data_dict["anomaly_mask"] = masks
        data_dict["severity"] = sev
        return data_dict
