"""Training data loading: foreground patches, augmentation, corruption, seeding, workers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.synthetic import make_dataset, uadnet_folders
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.corruption.registry import CORRUPTIONS, build_corruption
from uadnet.plans import PLANS_FILE, Plans
from uadnet.training.dataloading import PreprocessedDataset, UADDataLoader, make_training_pipeline

CASES = ["case_000", "case_001", "case_002"]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """A tiny 3D dataset preprocessed for 2d and 3d; returns (dataset folder, plans)."""
    with uadnet_folders(tmp_path_factory, "uad") as folders:
        make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=len(CASES))
        assert plan_main(["-d", "1", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
    folder = folders["UADNET_PREPROCESSED"] / "Dataset001_3d_iso"
    return folder, Plans.load(folder / PLANS_FILE)


def _first(folder, plans, cfg, seed, corruption="dag"):
    return next(make_training_pipeline(folder, plans, cfg, CASES, build_corruption(corruption, plans), num_workers=0,
                                       seed=seed))


@pytest.mark.parametrize("cfg", ["2d", "3d"])
def test_batch_shapes_dtypes_and_foreground(preprocessed, cfg):
    folder, plans = preprocessed
    c = plans.configuration(cfg)
    b = _first(folder, plans, cfg, seed=0)
    n, patch = c.batch_size, tuple(c.patch_size)
    assert b["data"].shape == b["target"].shape == (n, 1, *patch) and b["data"].dtype == np.float32
    assert b["foreground"].shape == b["anomaly_mask"].shape == (n, 1, *patch)
    assert b["foreground"].dtype == np.uint8 and b["anomaly_mask"].dtype == np.float32
    assert b["severity"].shape == (n,) and len(b["keys"]) == n and set(b["keys"]) <= set(CASES)
    assert (b["foreground"].reshape(n, -1).sum(1) > 0).all()  # every patch sits on the foreground
    for key in ("data", "target"):
        assert 0.0 <= b[key].min() and b[key].max() <= 1.0


def test_loader_without_augmentation_centres_on_foreground(preprocessed):
    folder, plans = preprocessed
    c = plans.configuration("2d")
    loader = UADDataLoader(PreprocessedDataset(folder / c.data_identifier, CASES), 16, c.patch_size, 2, seed=1)
    b = next(loader)
    half = np.array(c.patch_size) // 2
    q = np.array(c.patch_size) // 4
    window = b["foreground"][:, 0, half[0] - q[0]:half[0] + q[0] + 1, half[1] - q[1]:half[1] + q[1] + 1]
    assert (window.reshape(16, -1).max(1) > 0).all()  # the sampled voxel is within the jitter of the centre


@pytest.mark.parametrize("cfg", ["2d", "3d"])
def test_seeding(preprocessed, cfg):
    folder, plans = preprocessed
    np_state, py_state = np.random.get_state(), random.getstate()
    a, b, other = (_first(folder, plans, cfg, seed=s) for s in (3, 3, 4))
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state  # untouched
    for key in ("data", "target", "anomaly_mask", "severity", "foreground"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["keys"] == b["keys"]
    assert not np.array_equal(a["target"], other["target"])


def test_dag_changes_only_inside_anomaly_mask(preprocessed):
    folder, plans = preprocessed
    it = make_training_pipeline(folder, plans, "2d", CASES, build_corruption("dag", plans), num_workers=0, seed=5)
    changed_any = False
    for _ in range(3):
        b = next(it)
        diff = np.abs(b["data"] - b["target"]).max(1, keepdims=True) > 1e-6
        assert not (diff & (b["anomaly_mask"] <= 0)).any()
        changed_any |= bool(diff.any())
    assert changed_any


def test_two_workers_distinct_batches_and_clean_shutdown(preprocessed):
    folder, plans = preprocessed
    aug = make_training_pipeline(folder, plans, "2d", CASES, build_corruption("dag", plans), num_workers=2, seed=0)
    try:
        batches = [next(aug) for _ in range(4)]
    finally:
        aug._finish()
    assert all(not p.is_alive() for p in aug._processes)
    for i in range(len(batches)):
        assert batches[i]["data"].shape == (plans.configuration("2d").batch_size, 1, *plans.configuration("2d").patch_size)
        for j in range(i):
            assert not np.array_equal(batches[i]["target"], batches[j]["target"])


def test_missing_preprocessed_files_give_clear_error(preprocessed, tmp_path):
    folder, plans = preprocessed
    with pytest.raises(FileNotFoundError, match="run uadnet_plan_and_preprocess"):
        PreprocessedDataset(folder / plans.configuration("2d").data_identifier, [*CASES, "case_999"])
    ident = plans.configuration("2d").data_identifier
    (tmp_path / ident).mkdir()
    for case in CASES:
        (tmp_path / ident / f"{case}.npy").write_bytes((folder / ident / f"{case}.npy").read_bytes())
    with pytest.raises(FileNotFoundError, match="case_000_fg.npy is missing: run uadnet_plan_and_preprocess"):
        make_training_pipeline(tmp_path, plans, "2d", CASES, build_corruption("dag", plans))


def test_batch_stream_is_addressed_by_index_for_any_worker_count_and_start(preprocessed):
    """Batch i depends only on (seed, i): 0 or 2 workers give the same stream, and starting at batch 3 (a resumed
    run) gives batches 3, 4, … of it."""
    folder, plans = preprocessed

    def stream(workers, start, n):
        aug = make_training_pipeline(folder, plans, "2d", CASES, build_corruption("dag", plans), num_workers=workers,
                                     seed=5, start_batch=start)
        try:
            return [next(aug) for _ in range(n)]
        finally:
            if workers:
                aug._finish()

    single, multi, resumed = stream(0, 0, 6), stream(2, 0, 6), stream(2, 3, 3)
    assert [b["batch_index"] for b in multi] == list(range(6))
    for a, b in zip(single, multi):
        for key in ("data", "target", "anomaly_mask", "severity", "foreground"):
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(single[3:], resumed):
        np.testing.assert_array_equal(a["data"], b["data"])
        assert a["keys"] == b["keys"]
    assert not np.array_equal(single[0]["data"], single[1]["data"])


@pytest.mark.parametrize("family", sorted(CORRUPTIONS))
def test_validation_works_with_every_corruption_family(preprocessed, family):
    """Every family takes the same call (the foreign image of another case included, of another shape)."""
    import dataclasses

    from uadnet.training.validation import make_validation_set

    folder, plans = preprocessed
    plans = dataclasses.replace(plans, validation=dataclasses.replace(plans.validation, corruption=family, seed=3))
    cases = make_validation_set(folder, plans, "2d", CASES)
    assert [c.key for c in cases] == CASES
    for c in cases:
        assert c.corrupted.shape == c.healthy.shape and c.anomaly.shape == c.foreground.shape
        assert np.isfinite(c.corrupted).all()
        if family not in ("none", "synomaly_noise"):  # these leave the image unchanged
            assert c.anomaly.any() and not np.array_equal(c.corrupted, c.healthy)
