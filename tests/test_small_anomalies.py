"""Small synthetic anomalies (options measured on the development data): log-uniform shape sizes, the validation
size law, DAG's reference choice of biased classes."""

from __future__ import annotations

import numpy as np
import pytest

from uadnet.corruption.many_tasks import ManyTasks, sample_sizes
from uadnet.corruption.shapes import random_shape
from uadnet.plans import Plans, SizeLaw


def _extents(distribution: str, n: int = 300) -> np.ndarray:
    """Full x extent (voxels, spacing 1) of ``n`` axis-aligned boxes of 2-40 mm without blur."""
    out = []
    fg = np.ones((1, 96, 96), bool)
    for seed in range(n):
        m = random_shape((1, 96, 96), fg, np.random.default_rng(seed), (1.0, 1.0, 1.0), (2.0, 40.0), ("box",),
                         edge_probability=0.0, rotate=False, center=(0, 48, 48), size_distribution=distribution)
        out.append(np.count_nonzero(m[0, 48]))
    return np.asarray(out)


def test_log_uniform_sizes_cover_small_anomalies():
    uniform, log = _extents("uniform"), _extents("log_uniform")
    assert 2 <= log.min() and log.max() <= 41 and 2 <= uniform.min() and uniform.max() <= 41
    # log-uniform: about half the shapes below the geometric mean sqrt(2 * 40) ≈ 9 mm; uniform: about a sixth
    assert 0.4 < np.mean(log < 9) < 0.6
    assert np.mean(uniform < 9) < 0.25
    with pytest.raises(ValueError, match="size_distribution"):
        _extents("normal", 1)


def test_size_law_log_uniform_bounds_and_spread():
    law = SizeLaw(minimum=0.02, maximum=0.5, distribution="log_uniform")
    rng = np.random.default_rng(0)
    sizes = np.stack([sample_sizes(rng, (100, 50), law) for _ in range(2000)])
    assert (sizes[:, 0] >= 2).all() and (sizes[:, 0] <= 50).all() and (sizes[:, 1] >= 1).all()
    assert (sizes[:, 1] <= 25).all()
    assert np.median(sizes[:, 0]) == pytest.approx(np.sqrt(2 * 50), rel=0.1)  # geometric mean
    gamma = np.stack([sample_sizes(rng, (100, 50), SizeLaw()) for _ in range(2000)])
    assert np.mean(sizes[:, 0] < 6) > 0.25 > np.mean(gamma[:, 0] < 6) + 0.2
    with pytest.raises(ValueError, match="distribution"):
        sample_sizes(rng, (10, 10), SizeLaw(distribution="beta"))


def test_validation_anomalies_follow_the_validation_size_law(uadnet_env):
    """make_validation_set sizes the many-tasks validation anomalies with validation.size_law, draws them with
    validation.seed (another seed: other anomalies), and plans written before the validation section migrate."""
    from tests.synthetic import make_dataset
    from uadnet.planning.hardware import HardwareInfo
    from uadnet.planning.plan_and_preprocess import plan_and_preprocess_dataset
    from uadnet.training.validation import make_validation_set

    raw, pre, _ = uadnet_env
    make_dataset(raw, 1, "3d_iso", n_cases=4)
    plans = plan_and_preprocess_dataset(1, ["2d"], 1, HardwareInfo("cpu", False, 2, 8.0, 50.0),
                                        disable_progress_bar=True, verbose=False)
    ids = ["case_000", "case_001", "case_002", "case_003"]
    sizes = {}
    for name, maximum in (("tiny", 0.1), ("large", 0.6)):
        plans.validation.size_law = SizeLaw(minimum=0.05, maximum=maximum, distribution="log_uniform")
        cases = make_validation_set(pre / "Dataset001_3d_iso", plans, "2d", ids)
        sizes[name] = np.mean([(c.anomaly == 1).sum() for c in cases])
    assert 0 < sizes["tiny"] * 10 < sizes["large"]
    assert isinstance(ManyTasks.from_plans(plans, "validation").size_law, SizeLaw)
    again = make_validation_set(pre / "Dataset001_3d_iso", plans, "2d", ids)
    assert all(np.array_equal(a.corrupted, b.corrupted) for a, b in zip(cases, again))
    plans.validation.seed = 1
    other = make_validation_set(pre / "Dataset001_3d_iso", plans, "2d", ids)
    assert not all(np.array_equal(a.anomaly, b.anomaly) for a, b in zip(cases, other))
    # an older plans file: validation settings under training and image_conditioned
    old = plans.to_dict()
    validation = old.pop("validation")
    for cfg in old["configurations"].values():
        cfg["training"].update(validation_corruption="many_tasks_validation", validation_max_cases=3,
                               validation_size_law=validation["size_law"])
    old["methods"]["image_conditioned"]["validation_tasks"] = ["foreign_patch"]
    migrated = Plans.from_dict(old).validation
    assert (migrated.max_cases, migrated.tasks, migrated.size_law) == (3, ["foreign_patch"], plans.validation.size_law)


def test_dag_reference_bias_classes_condition_on_the_applied_change():
    """``bias_classes: reference``: classes drawn with probability n_q / (N + 1000) (all when none is drawn), and the
    severity is the bias actually applied after clipping, never more than the drawn α_b."""
    from uadnet.corruption.dag import DAG

    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (1, 1, 64, 64)).astype(np.float32)
    fg = np.ones((1, 64, 64), bool)
    for seed in range(10):
        subset = DAG(size_mm=(20, 30), severity_range=(0.0, 0.0), edge_probability=0.0)
        ref = DAG(size_mm=(20, 30), severity_range=(0.0, 0.0), edge_probability=0.0, bias_classes="reference")
        # severity 0: both leave the image unchanged
        assert np.array_equal(ref(image, fg, np.random.default_rng(seed), (1, 1, 1)).image, image)
        assert np.array_equal(subset(image, fg, np.random.default_rng(seed), (1, 1, 1)).image, image)
    bright = np.full((1, 1, 64, 64), 0.95, np.float32)
    for seed in range(20):
        out = DAG(size_mm=(20, 30), severity_range=(0.0, 1.0), edge_probability=0.0, bias_classes="reference")(
            bright, fg, np.random.default_rng(seed), (1, 1, 1), foreign=bright)
        change = float(np.abs(out.image - bright).max())
        # a flat image: texture changes nothing, so every change is the bias, which clipping caps at +0.05
        assert change <= out.severity + 1e-6 and out.severity <= 1.0
        assert (out.image - bright).max() <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="bias_classes"):
        DAG(bias_classes="all")


def test_planned_validation_adds_small_anomalies_of_their_own_class(uadnet_env):
    """The planner asks validation for small anomalies of the DAG spots' sizes; they are label 2, drawn from their
    own stream (the other anomalies, label 1, are those of plans without them), sized in mm."""
    from tests.synthetic import make_dataset
    from uadnet.planning.hardware import HardwareInfo
    from uadnet.planning.plan_and_preprocess import plan_and_preprocess_dataset
    from uadnet.planning.planner import SMALL_VALIDATION_ANOMALIES
    from uadnet.training.validation import make_validation_set

    raw, pre, _ = uadnet_env
    make_dataset(raw, 1, "3d_iso", n_cases=4)
    plans = plan_and_preprocess_dataset(1, ["2d"], 1, HardwareInfo("cpu", False, 2, 8.0, 50.0),
                                        disable_progress_bar=True, verbose=False)
    vp = plans.validation
    assert vp.small_anomalies == SMALL_VALIDATION_ANOMALIES > 0
    assert vp.small_size_mm == plans.corruption.small_shape_size_mm
    ids = ["case_000", "case_001", "case_002", "case_003"]
    with_small = make_validation_set(pre / "Dataset001_3d_iso", plans, "2d", ids)
    vp.small_anomalies = 0
    without = make_validation_set(pre / "Dataset001_3d_iso", plans, "2d", ids)
    for a, b in zip(with_small, without):
        assert a.anomaly.dtype == np.uint8 and set(np.unique(b.anomaly)) <= {0, 1}
        assert np.array_equal(a.anomaly == 1, b.anomaly == 1)
        assert (a.anomaly == 2).any() and not (a.anomaly == 2)[~a.foreground].any()
        assert not np.array_equal(a.corrupted, b.corrupted)
    with pytest.raises(Exception, match="small_anomalies"):
        Plans.from_dict({**plans.to_dict(), "validation": {**plans.validation.__dict__, "small_anomalies": -1}})


# ------------------------------------------------------------------------------------ intensity blobs (validation)
def _blob_image(channels: int = 1, shape=(24, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((channels, *shape), 0.4, np.float32)
    image += np.linspace(0, 0.2, shape[-1], dtype=np.float32)  # a ramp: a multiplicative change, not an additive one
    fg = np.zeros(shape, bool)
    fg[2:-2, 4:-4, 4:-4] = True
    return image, fg


def test_intensity_blobs_scale_the_intensity_inside_the_shape_only():
    from uadnet.corruption import IntensityBlobs

    image, fg = _blob_image()
    out = IntensityBlobs(size_mm=(10.0, 16.0), relative_change=(0.2, 0.4))(image, fg, np.random.default_rng(1),
                                                                            (1.0, 1.0, 1.0))
    changed = np.abs(out.image - image)[0] > 1e-7
    assert changed.any() and not changed[~fg].any() and (out.mask[changed] > 0).all()
    # one relative change r everywhere: x' / x - 1 = s · r · m (single channel: gain 1)
    ratio = (out.image[0] / image[0] - 1)[out.mask > 0.05] / out.mask[out.mask > 0.05]
    assert np.ptp(ratio) < 1e-4 and 0.2 - 1e-4 <= abs(ratio[0]) <= 0.4 + 1e-4
    again = IntensityBlobs(size_mm=(10.0, 16.0), relative_change=(0.2, 0.4))(image, fg, np.random.default_rng(1),
                                                                              (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out.image, again.image)
    assert 0 < out.severity <= 1


def test_intensity_blobs_are_sized_in_mm_and_change_colour_in_several_channels():
    from uadnet.corruption import IntensityBlobs

    image, fg = _blob_image(channels=3)
    extents = {}
    for spacing in (1.0, 2.0):
        blobs = IntensityBlobs(size_mm=(12.0, 12.0), edge_sigma_voxels=(0.0, 0.0))
        sizes = []
        for seed in range(20):
            mask = blobs(image, fg, np.random.default_rng(seed), (spacing,) * 3).mask >= 0.5
            sizes.append(max(np.ptp(np.nonzero(mask)[a]) + 1 for a in range(3)))
        extents[spacing] = np.median(sizes)
    # 12 mm: 12 voxels at 1 mm (a rotated box reaches further along an axis), 6 at 2 mm
    assert 10 <= extents[1.0] <= 18 and 5 <= extents[2.0] <= 9
    out = IntensityBlobs()(image, fg, np.random.default_rng(4), (1.0, 1.0, 1.0))
    inside = out.mask > 0.5
    per_channel = [np.median(out.image[c][inside] / image[c][inside] - 1) for c in range(3)]
    assert len({np.sign(v) for v in per_channel}) == 1 and np.ptp(per_channel) > 1e-3  # one sign, other gains
    tiny = IntensityBlobs.small((0.5, 0.5))(image, fg, np.random.default_rng(0), (2.0, 2.0, 2.0)).mask
    assert np.count_nonzero(tiny >= 0.5) >= 4  # raised to two voxels of the finest axis
    with pytest.raises(ValueError, match="relative_change"):
        IntensityBlobs(relative_change=(0.0, 0.5))
