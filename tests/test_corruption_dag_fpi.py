"""Property tests of the shapes, FPI and DAG corruptions, the registry and the batchgenerators transform."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from uadnet.corruption import CORRUPTIONS, DAG, FPI, build_corruption, random_shape
from uadnet.corruption.dag import intensity_bias, quantise, selection_map, texture
from uadnet.corruption.fpi import fpi_blend
from uadnet.corruption.transforms import CorruptionTransform
from uadnet.plans import CorruptionPlan

SHAPES = {"2d": (1, 1, 96, 96), "3d": (1, 40, 40, 40), "2ch": (2, 24, 48, 48)}


def _sample(shape, seed=0):
    g = np.random.default_rng(seed)
    img = g.random(shape).astype(np.float32)
    fg = np.zeros(shape[1:], bool)
    fg[..., 8:-8, 8:-8] = True  # a square foreground (all slices)
    return img, fg


@pytest.mark.parametrize("family", [FPI, DAG])
@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_range_shape_foreground_and_inputs_untouched(family, kind):
    img, fg = _sample(SHAPES[kind])
    before, fg_before = img.copy(), fg.copy()
    corr = family(size_mm=(8, 20))
    for seed in range(5):
        res = corr(img, fg, np.random.default_rng(seed), (2.0, 1.0, 1.0))
        assert res.image.shape == img.shape and res.image.dtype == np.float32
        assert res.mask.shape == img.shape[1:] and res.mask.dtype == np.float32
        assert 0 <= res.image.min() and res.image.max() <= 1 and 0 <= res.mask.min() and res.mask.max() <= 1
        assert 0 <= res.severity <= 1
        assert np.all(res.mask[~fg] == 0)
        assert np.array_equal(res.image[:, ~fg], img[:, ~fg])  # nothing changes outside the foreground
    assert np.array_equal(img, before) and np.array_equal(fg, fg_before)


@pytest.mark.parametrize("family", [FPI, DAG])
def test_zero_severity_or_empty_foreground_returns_input(family):
    img, fg = _sample(SHAPES["3d"])
    res = family(severity_range=(0.0, 0.0))(img, fg, np.random.default_rng(1), (1, 1, 1))
    assert np.array_equal(res.image, img) and res.severity == 0 and not res.mask.any()
    res = family()(img, np.zeros_like(fg), np.random.default_rng(1), (1, 1, 1))
    assert np.array_equal(res.image, img) and res.severity == 0 and not res.mask.any()


@pytest.mark.parametrize("family", [FPI, DAG])
def test_change_grows_with_severity(family):
    img, fg = _sample(SHAPES["2d"])
    foreign = np.random.default_rng(9).random(img.shape).astype(np.float32) * 0.2  # a darker foreign image
    changes, masks = [], []
    for a in (0.1, 0.3, 0.5, 0.7, 0.9):  # same seed → same shape, classes and sign; only α differs
        res = family(severity_range=(a, a), edge_probability=0.0)(img, fg, np.random.default_rng(3), (1, 1, 1),
                                                                  foreign=foreign)
        assert res.severity == pytest.approx(a)
        masks.append(res.mask)
        changes.append(np.abs(res.image - img)[:, res.mask > 0].mean())
    assert all(np.array_equal(m, masks[0]) for m in masks)
    assert np.all(np.diff(changes) > 0), changes


def test_blend_parts_are_monotone_and_exact_at_zero():
    img, _ = _sample((1, 1, 32, 32))
    fp = 1 - img
    m = np.zeros((1, 32, 32), np.float32)
    m[0, 8:24, 8:24] = 1.0
    assert np.array_equal(fpi_blend(img, fp, m, 0.0), img)
    assert np.array_equal(texture(img, fp, m, 0.0), img)
    d = [np.abs(texture(img, fp, m, a) - img).sum() for a in (0.2, 0.5, 1.0)]
    assert d[0] < d[1] < d[2]
    assert np.allclose(fpi_blend(img, fp, m, 1.0)[:, m > 0], fp[:, m > 0])
    # the texture at α=1 is the foreign patch rescaled to the target's range inside the mask
    t = texture(img, fp, m, 1.0)[:, m > 0]
    assert t.min() == pytest.approx(img[:, m > 0].min(), abs=1e-6) and t.max() == pytest.approx(img[:, m > 0].max())


@pytest.mark.parametrize("family", [FPI, DAG])
def test_seed_determinism(family):
    img, fg = _sample(SHAPES["2ch"])
    corr = family(size_mm=(8, 20))
    a = corr(img, fg, np.random.default_rng(42), (2, 1, 1))
    b = corr(img, fg, np.random.default_rng(42), (2, 1, 1))
    c = corr(img, fg, np.random.default_rng(43), (2, 1, 1))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.severity == b.severity
    assert not np.array_equal(a.image, c.image)


def _extent(mask, axis):
    hit = np.flatnonzero(mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis)))
    return hit[-1] - hit[0] + 1


@pytest.mark.parametrize("rotate,kind", [(False, "box"), (True, "ellipsoid")])
def test_physical_size_under_anisotropic_spacing(rotate, kind):
    shape = (60, 80, 40)
    m = random_shape(shape, np.ones(shape, bool), np.random.default_rng(0), (1.0, 0.5, 2.0), (20, 20), (kind,),
                     edge_probability=0.0, rotate=rotate, center=(30, 40, 20))
    # 20 mm: ~20 voxels on z (1 mm), ~40 on y (0.5 mm), ~10 on x (2 mm); a sphere is rotation invariant
    assert abs(_extent(m, 0) - 20) <= 2 and abs(_extent(m, 1) - 40) <= 2 and abs(_extent(m, 2) - 10) <= 1
    m2 = random_shape((1, 80, 40), np.ones((1, 80, 40), bool), np.random.default_rng(0), (5.0, 0.5, 2.0), (20, 20),
                      (kind,), edge_probability=0.0, rotate=rotate, center=(0, 40, 20))
    assert abs(_extent(m2, 1) - 40) <= 2 and abs(_extent(m2, 2) - 10) <= 1  # 2D: slice spacing ignored


def test_shape_types_soft_edges_and_crop_border():
    shape = (1, 64, 64)
    fg = np.ones(shape, bool)
    for kind in ("box", "ellipsoid", "blob"):
        m = random_shape(shape, fg, np.random.default_rng(1), (1, 1, 1), (20, 30), (kind,), edge_probability=0.0)
        assert set(np.unique(m)) <= {0.0, 1.0} and m.sum() > 50
    soft = random_shape(shape, fg, np.random.default_rng(1), (1, 1, 1), (20, 30), ("box",), (3, 3), 1.0)
    assert soft.max() == pytest.approx(1.0) and ((soft > 0) & (soft < 1)).sum() > 50
    edge = random_shape(shape, fg, np.random.default_rng(1), (1, 1, 1), (30, 30), ("box",), center=(0, 0, 63))
    assert edge[0, 0, 63] > 0 and edge.shape == shape  # a shape clipped by the image border
    with pytest.raises(ValueError, match="unknown shape"):
        random_shape(shape, fg, np.random.default_rng(1), (1, 1, 1), types=("star",))


def test_codebook_quantisation_and_intensity_bias():
    centroids = [0.1, 0.4, 0.8]
    v = np.array([0.0, 0.2, 0.26, 0.5, 0.59, 0.61, 1.0])
    assert quantise(v, centroids).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert np.array_equal(quantise(v, centroids), np.abs(v[:, None] - np.array(centroids)).argmin(1))
    img = np.full((1, 1, 16, 16), 0.1, np.float32)
    img[..., 8:] = 0.8
    sel = selection_map(img[0], centroids, [2], 0.0)
    assert np.array_equal(sel, (img[0] == np.float32(0.8)).astype(np.float32))
    m = np.ones((1, 16, 16), np.float32)
    out = intensity_bias(img, m, [centroids], [[2]], 0.1, -1.0, sigma_voxels=0.0)
    assert np.allclose(out[..., 8:], 0.7) and np.array_equal(out[..., :8], img[..., :8])


def test_dag_codebook_channels():
    img, fg = _sample(SHAPES["2ch"])
    dag = DAG(codebook=[[0.2, 0.5, 0.8], [0.3, 0.6]])
    assert dag(img, fg, np.random.default_rng(0), (1, 1, 1)).image.shape == img.shape
    with pytest.raises(ValueError, match="codebook"):
        DAG(codebook=[[0.2], [0.5], [0.8]])(img, fg, np.random.default_rng(0), (1, 1, 1))


def test_registry_builds_from_plans():
    cp = CorruptionPlan(shape_size_mm=[5.0, 15.0], intensity_codebook=[[0.2, 0.6]], severity_range=[0.1, 0.5])
    plans = SimpleNamespace(corruption=cp)
    assert {"fpi", "dag"} <= set(CORRUPTIONS)
    dag = build_corruption("dag", plans)
    assert isinstance(dag, DAG) and dag.size_mm == (5.0, 15.0) and dag.codebook == [[0.2, 0.6]]
    fpi = build_corruption("fpi", plans)
    assert isinstance(fpi, FPI) and fpi.severity_range == (0.1, 0.5)
    with pytest.raises(KeyError, match="known: .*dag"):
        build_corruption("nope", plans)


@pytest.mark.parametrize("spatial", [(32, 32), (16, 24, 24)])
def test_transform_keys_shapes_determinism(spatial):
    g = np.random.default_rng(0)
    batch = g.random((3, 2, *spatial)).astype(np.float32)
    fg = np.ones((3, 1, *spatial), bool)

    def run(seed):
        t = CorruptionTransform(DAG(size_mm=(5, 12)), spacing=(1.0, 1.0, 1.0), seed=seed)
        return t(data=batch.copy(), foreground=fg)

    a, b, c = run(5), run(5), run(6)
    assert a["data"].shape == batch.shape and np.array_equal(a["target"], batch)
    assert a["anomaly_mask"].shape == (3, 1, *spatial) and a["anomaly_mask"].dtype == np.float32
    assert a["severity"].shape == (3,) and a["severity"].dtype == np.float32
    assert all(np.array_equal(a[k], b[k]) for k in ("data", "anomaly_mask", "severity"))
    assert not np.array_equal(a["data"], c["data"])
    assert not np.array_equal(a["data"], batch)
    # without a foreground key everything is foreground; a single-sample batch uses its own shifted copy
    one = CorruptionTransform(FPI(size_mm=(5, 12), severity_range=(0.5, 0.5)), seed=0)(data=batch[:1].copy())
    assert one["severity"][0] == pytest.approx(0.5) and one["anomaly_mask"].any()


def test_dag_places_up_to_max_shapes_shapes_with_one_severity():
    from scipy import ndimage

    img = np.full((1, 1, 96, 96), 0.5, np.float32)
    img[:, :, :, 48:] = 0.8
    fg = np.ones((1, 96, 96), bool)
    one, many = DAG(size_mm=(8, 12), edge_probability=0.0), DAG(size_mm=(8, 12), edge_probability=0.0, max_shapes=4)
    counts, single = [], []
    for seed in range(12):
        a = one(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        b = many(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        again = many(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        np.testing.assert_array_equal(b.image, again.image)  # deterministic under the seed
        if a.severity > 0:  # the first shape is the one-shape corruption's (same draws)
            assert np.all(b.mask >= a.mask) and b.severity >= a.severity
        counts.append(ndimage.label(b.mask > 0)[1])
        single.append(ndimage.label(a.mask > 0)[1])
    assert np.mean(counts) > np.mean(single) + 0.5  # several shapes per sample (they may touch)
    assert np.mean(b.mask > 0) < 0.5
    with pytest.raises(ValueError, match="dag_max_shapes"):
        DAG(max_shapes=0)


def test_dag_small_shapes_add_spots_of_a_few_voxels_and_keep_the_first_shape():
    from scipy import ndimage

    img = np.full((1, 1, 96, 96), 0.5, np.float32)
    img[:, :, :, 48:] = 0.8
    fg = np.ones((1, 96, 96), bool)
    base = DAG(size_mm=(20, 30), edge_probability=0.0)
    spots = DAG(size_mm=(20, 30), edge_probability=0.0, small_shapes=5, small_size_mm=(2.0, 4.0))
    small_sizes = []
    for seed in range(12):
        a = base(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        b = spots(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        np.testing.assert_array_equal(b.image, spots(img, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0)).image)
        if a.severity == 0:
            continue
        assert np.all(b.mask >= a.mask) and b.severity >= a.severity  # the large shape is the base corruption's
        extra = (b.mask > 0) & ~(a.mask > 0)
        labels = ndimage.label(extra)[0]
        small_sizes += list(np.bincount(labels.ravel())[1:])
    assert small_sizes, "no small shape was placed in 12 samples"
    # full extent 2-4 mm at 1 mm spacing with edge blur of at most 1 voxel: a few voxels, never a large region
    assert max(small_sizes) <= 60 and np.median(small_sizes) <= 25
    with pytest.raises(ValueError, match="dag_small_shapes"):
        DAG(small_shapes=-1)
    with pytest.raises(ValueError, match="small_shape_size_mm"):
        DAG(small_size_mm=(0.0, 3.0))
