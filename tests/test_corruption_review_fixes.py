"""Regression tests for review findings: blurred sizes in mm, per-worker streams, size law on the foreground."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from uadnet.corruption.dag import DAG
from uadnet.corruption.fpi import FPI
from uadnet.corruption.many_tasks import ManyTasks
from uadnet.corruption.shapes import random_shape
from uadnet.corruption.transforms import CorruptionTransform
from uadnet.plans import CorruptionPlan, MethodsPlan


def test_blurred_shapes_keep_their_size_in_mm_under_anisotropic_spacing():
    spacing = (5.0, 0.5, 0.5)
    shape = (20, 200, 200)
    fg = np.ones(shape, bool)
    for seed in range(3):
        m = random_shape(shape, fg, np.random.default_rng(seed), spacing, size_mm=(20, 20), types=("box",),
                         edge_sigma_voxels=(4, 4), edge_probability=1.0, rotate=False, center=(10, 100, 100))
        half = m >= 0.5
        extent_mm = [half.any(axis=tuple(b for b in range(3) if b != a)).sum() * s for a, s in enumerate(spacing)]
        assert all(15 <= e <= 26 for e in extent_mm), extent_mm
    m = random_shape((1, 64, 64), np.ones((1, 64, 64), bool), np.random.default_rng(0), (999.0, 1.0, 1.0),
                     size_mm=(20, 20), types=("box",), edge_sigma_voxels=(3, 3), edge_probability=1.0)
    assert m.shape == (1, 64, 64) and m.max() == pytest.approx(1.0)


def test_transform_streams_differ_per_worker_and_repeat_per_seed():
    batch = {"data": np.random.default_rng(0).random((4, 1, 32, 32)).astype(np.float32)}
    t = CorruptionTransform(DAG(size_mm=(5, 10)), spacing=(1.0, 1.0), seed=7)

    def run(transform, np_seed):
        np.random.seed(np_seed)  # batchgenerators seeds numpy's global RNG per worker
        worker = copy.deepcopy(transform)
        worker._owner_pid = worker._rng_pid = -1  # pretend to be another process
        return worker(**copy.deepcopy(batch))["anomaly_mask"]

    t(**copy.deepcopy(batch))  # used once in the parent before the workers start
    a, b, a2 = run(t, 1), run(t, 2), run(t, 1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, a2)
    first = CorruptionTransform(DAG(size_mm=(5, 10)), spacing=(1.0, 1.0), seed=7)(**copy.deepcopy(batch))
    again = CorruptionTransform(DAG(size_mm=(5, 10)), spacing=(1.0, 1.0), seed=7)(**copy.deepcopy(batch))
    np.testing.assert_array_equal(first["anomaly_mask"], again["anomaly_mask"])


def test_many_tasks_size_law_follows_the_foreground_extent(monkeypatch):
    import uadnet.corruption.many_tasks as mt_module

    image = np.random.default_rng(0).random((1, 1, 128, 128)).astype(np.float32)
    fg = np.zeros((1, 128, 128), bool)
    fg[0, 50:70, 40:80] = True  # 20 x 40 voxels of anatomy in a 128² patch
    seen = []
    original = mt_module.random_deformed_shape

    def spy(rng, spatial_shape, centre, law=None, **kw):
        seen.append(list(spatial_shape))
        return original(rng, spatial_shape, centre, law, **kw)

    monkeypatch.setattr(mt_module, "random_deformed_shape", spy)
    mt = ManyTasks(tasks=["fractal_intensity", "sink"], clean_fraction=0.0)
    for seed in range(10):
        out = mt(image, fg, np.random.default_rng(seed))
        assert not out.mask[~fg].any()
    assert seen and all(s == [20, 40] for s in seen)


def test_plans_with_unsupported_severity_distribution_are_refused():
    plans = SimpleNamespace(corruption=CorruptionPlan(shape_size_mm=[10, 40], severity_distribution="beta"),
                            methods=MethodsPlan())
    for family in (DAG, FPI):
        with pytest.raises(ValueError, match="severity_distribution"):
            family.from_plans(plans)
    plans.corruption = CorruptionPlan(shape_size_mm=[10, 40], severity_range=[0.2, 1.5])
    with pytest.raises(ValueError, match="severity_range"):
        DAG.from_plans(plans)
