"""Poisson blending, the "many tasks" family and Synomaly noise: properties on small hand-made arrays."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from uadnet.corruption.many_tasks import (
    TASKS,
    ManyTasks,
    Shape,
    radial_deformation,
    random_deformed_shape,
    sample_sizes,
)
from uadnet.corruption.poisson import discrete_laplacian, poisson_blend
from uadnet.corruption.synomaly_noise import SynomalyNoise, _sample, synomaly_noise
from uadnet.plans import ImageConditionedPlan, SizeLaw, SynomalyPlan, ValidationPlan


def _ball(shape: tuple[int, ...], radius: float = 0.8) -> np.ndarray:
    g = np.indices(shape, float)
    c = (np.array(shape, float) - 1) / 2
    return np.sqrt(sum(((g[i] - c[i]) / max(c[i], 1)) ** 2 for i in range(len(shape)))) < radius


def _sample_case(c: int, z: int, y: int, x: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random image in [0, 1] on a ball foreground, shape (c, z, y, x)."""
    rng = np.random.default_rng(seed)
    fg = _ball((y, x))[None] if z == 1 else _ball((z, y, x))
    sigma = (0, 0, 2, 2) if z == 1 else (0, 2, 2, 2)
    img = ndimage.gaussian_filter(rng.random((c, z, y, x)), sigma)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * fg).astype(np.float32), fg


CASES = {"2d": (1, 1, 48, 40), "2d_2ch": (2, 1, 40, 40), "3d": (1, 20, 24, 22), "3d_2ch": (2, 16, 20, 20)}


# ---------------------------------------------------------------------------------------------------- Poisson
@pytest.mark.parametrize("shape, box", [((1, 24, 26), (slice(6, 17), slice(5, 19))),
                                        ((2, 12, 13, 14), (slice(3, 9), slice(2, 10), slice(4, 11))),
                                        ((1, 22, 22, 22), (slice(2, 20),) * 3)])  # the last one uses CG
def test_poisson_source_gradients_reproduced(shape, box):
    g = np.indices(shape[1:], float)
    target = np.stack([0.3 + 0.01 * g.sum(0) + 0.05 * ch for ch in range(shape[0])])
    source = np.stack([0.5 + 0.2 * np.sin(g[0] / 3) * np.cos(g[-1] / 4) + 0.01 * g[-1] ** 1.5 / (ch + 1)
                       for ch in range(shape[0])])
    mask = np.zeros(shape[1:], bool)
    mask[box] = True
    before = target.copy(), source.copy(), mask.copy()
    out = poisson_blend(target, source, mask, mixed=False)
    assert out.shape == target.shape
    assert all(np.array_equal(a, b) for a, b in zip(before, (target, source, mask)))  # inputs untouched
    interior = mask.copy()
    interior[tuple([0, -1] if a == 0 else slice(None) for a in range(mask.ndim))] = False  # (none on the border)
    diff = (discrete_laplacian(out) - discrete_laplacian(source))[:, interior]
    assert np.abs(diff).max() < 1e-6
    assert np.array_equal(out[:, ~mask], target[:, ~mask])  # boundary ring and outside = target
    assert not np.allclose(out[:, mask], target[:, mask])


def test_poisson_mixed_picks_the_stronger_gradient():
    g = np.indices((30, 30), float)
    mask = np.zeros((30, 30), bool)
    mask[8:22, 6:24] = True
    # source stronger on every edge: mixed == source-gradient blending
    target = (0.2 + 0.01 * g[1])[None]
    source = (0.1 + 0.03 * g[0] + 0.02 * g[1])[None]
    assert np.allclose(poisson_blend(target, source, mask, mixed=True), poisson_blend(target, source, mask, False),
                       atol=1e-9)
    # target stronger on every edge (incl. a step edge): mixed keeps the target, source mode would not
    target = (0.1 + 0.02 * g[0] + 0.02 * g[1] + 0.3 * (g[1] > 15))[None]
    source = (0.5 + 0.005 * g[1])[None]
    assert np.allclose(poisson_blend(target, source, mask, mixed=True), target, atol=1e-9)
    assert not np.allclose(poisson_blend(target, source, mask, mixed=False), target, atol=1e-3)


def test_poisson_empty_mask_returns_target():
    target = np.random.default_rng(0).random((1, 10, 10))
    mask = np.zeros((10, 10), bool)
    mask[0, :] = True  # only the border: no unknowns
    assert np.array_equal(poisson_blend(target, target[::-1].copy(), mask), target)


# ------------------------------------------------------------------------------------------------- many tasks
def test_size_law_bounds():
    law = SizeLaw()
    rng = np.random.default_rng(0)
    d = np.array([40, 128, 96])
    sizes = np.stack([sample_sizes(rng, d, law) for _ in range(2000)])
    assert (sizes >= law.minimum * d - 1e-9).all() and (sizes <= law.maximum * d + 1e-9).all()
    assert (sizes == law.minimum * d).any() and np.median(sizes / d) > law.minimum  # clipping and spread both seen
    for _ in range(200):  # after shear/rotation/wobble the bounding box still honours the upper bound
        shape = random_deformed_shape(rng, d, d / 2, law)
        assert (2 * shape.half_extent() <= law.maximum * d + 1e-6).all()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("task", list(TASKS))
def test_many_tasks_range_shape_foreground(case, task):
    image, fg = _sample_case(*CASES[case])
    before = image.copy(), fg.copy()
    family = ManyTasks(tasks=[task], clean_fraction=0.0)
    changed = 0
    for seed in range(3):
        out = family(image, fg, np.random.default_rng(seed), (1.0, 1.0, 1.0))
        assert out.image.shape == image.shape and out.image.dtype == np.float32
        assert out.mask.shape == fg.shape and out.mask.dtype == np.float32
        assert 0 <= out.image.min() and out.image.max() <= 1
        assert 0 <= out.mask.min() and out.mask.max() <= 1 and 0 <= out.severity <= 1
        assert (out.mask[~fg] == 0).all()
        assert np.array_equal(out.image[:, ~fg], image[:, ~fg])  # changes confined to the foreground
        changed += out.severity > 0
        if out.severity > 0:
            assert out.mask.max() > 0
            assert np.abs(out.image - image)[:, out.mask == 0].max() <= 1e-6  # no change outside the mask
    assert changed >= 2
    assert np.array_equal(before[0], image) and np.array_equal(before[1], fg)


def test_many_tasks_clean_fraction_and_determinism():
    image, fg = _sample_case(*CASES["2d_2ch"])
    out = ManyTasks(clean_fraction=1.0)(image, fg, np.random.default_rng(0))
    assert np.array_equal(out.image, image) and out.severity == 0 and not out.mask.any()
    family = ManyTasks(clean_fraction=0.0)
    a, b = (family(image, fg, np.random.default_rng(7)) for _ in range(2))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.severity == b.severity
    c = family(image, fg, np.random.default_rng(8))
    assert not np.array_equal(a.image, c.image)


def test_many_tasks_foreign_image_is_used():
    image, fg = _sample_case(*CASES["2d"], seed=0)
    foreign = np.ones_like(image)  # a flat bright image: the patch tasks must brighten the anomaly
    out = ManyTasks(tasks=["foreign_patch"], clean_fraction=0.0)(image, fg, np.random.default_rng(3), foreign=foreign)
    m = out.mask > 0
    assert (out.image[:, m] >= image[:, m] - 1e-6).all() and (out.image[:, m] > image[:, m] + 1e-3).any()


def test_many_tasks_from_plans_and_errors():
    ic = ImageConditionedPlan()
    plans = SimpleNamespace(methods=SimpleNamespace(image_conditioned=ic), validation=ValidationPlan(),
                            corruption=SimpleNamespace(relative_size_law=SizeLaw(maximum=0.5), max_anomalies=2,
                                                       clean_fraction=0.1))
    train, val = ManyTasks.from_plans(plans), ManyTasks.from_plans(plans, split="validation")
    assert train.tasks == ic.train_tasks and val.tasks == ValidationPlan().tasks
    assert len(train.tasks) == 3 and len(val.tasks) == 2 and not set(train.tasks) & set(val.tasks)
    assert train.max_anomalies == 2 and train.clean_fraction == 0.1 and train.size_law.maximum == 0.5
    with pytest.raises(ValueError, match="choose from"):
        ManyTasks(tasks=["nope"])
    with pytest.raises(ValueError, match="split"):
        ManyTasks.from_plans(plans, split="test")


@pytest.mark.parametrize("mode, sign", [("source", 1), ("sink", -1)])
def test_radial_deformation_moves_mass(mode, sign):
    g = np.indices((41, 41), float)
    centre = np.array([20.0, 20.0])
    dot = np.exp(-((g[0] - 20) ** 2 + (g[1] - 27) ** 2) / (2 * 1.5 ** 2))[None]  # 7 px right of the centre
    shape = Shape(centre, np.diag([14.0, 14.0]), "ellipse")
    inside = shape.gauge(g.reshape(2, -1)).reshape(41, 41) <= 1
    out = radial_deformation(dot, inside, centre, shape.gauge, factor=2.0, mode=mode, max_distance=40)

    def radius(img: np.ndarray) -> float:
        w = img[0] / img[0].sum()
        return float(np.sqrt((w * ((g[0] - 20) ** 2 + (g[1] - 20) ** 2)).sum()))

    assert sign * (radius(out) - radius(dot)) > 1.0
    assert np.array_equal(out[:, ~inside], dot[:, ~inside])


# --------------------------------------------------------------------------------------------------- Synomaly
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 48, 56), (1, 24, 32, 32), (2, 16, 24, 24)])
@pytest.mark.parametrize("sign", [1, -1])
def test_synomaly_noise_structure(shape, sign):
    fg = _ball(shape[2:], 0.9)[None] if shape[1] == 1 else _ball(shape[1:], 0.9)
    eps, m_ref, u = _sample(shape, fg, np.random.default_rng(5), 3.0, 175 / 255)
    eps_syn, m = synomaly_noise(shape, fg, np.random.default_rng(5), 3.0, 175 / 255, 0.5, sign)
    assert eps_syn.shape == tuple(shape) and eps_syn.dtype == np.float32 and m.shape == tuple(shape[1:])
    assert np.array_equal(m, m_ref) and m.any() and set(np.unique(m)) <= {0.0, 1.0}
    assert (m[~fg] == 0).all()  # restricted to the foreground
    diff = eps_syn - eps
    assert (diff[:, m == 0] == 0).all()
    assert np.allclose(diff[:, m == 1], sign * (u + 0.5))  # one u per sample, sign d
    # without a foreground blobs appear outside it too; a seed fixes everything
    _, m_all = synomaly_noise(shape, None, np.random.default_rng(5))
    assert (m_all >= m).all()
    again, _ = synomaly_noise(shape, fg, np.random.default_rng(5), 3.0, 175 / 255, 0.5, sign)
    assert np.array_equal(again, eps_syn)


def test_synomaly_corruption_interface_and_plans():
    image, fg = _sample_case(*CASES["3d_2ch"])
    plans = SimpleNamespace(methods=SimpleNamespace(synomaly=SynomalyPlan(sign=-1, offset=0.75)))
    family = SynomalyNoise.from_plans(plans)
    assert family.sign == -1 and family.offset == 0.75
    out = family(image, fg, np.random.default_rng(0), (1.0, 1.0, 1.0))
    assert out.image.shape == image.shape and out.mask.shape == fg.shape
    assert 0 <= out.image.min() and out.image.max() <= 1 and 0 <= out.severity <= 1
    assert (out.mask[~fg] == 0).all() and out.mask.any()
    m = out.mask > 0
    assert np.array_equal(out.image[:, ~m], image[:, ~m]) and (out.image[:, m] <= image[:, m]).all()
    eps_syn, m2 = family.sample(image.shape, fg, np.random.default_rng(0))
    assert eps_syn.shape == image.shape and (m2[~fg] == 0).all()
