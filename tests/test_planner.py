"""The planner is a pure function of the fingerprint: test it on hand-made fingerprints."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from uadnet.planning.cost_model import (
    ACTIVATION_FLOP_EQUIVALENT,
    estimate_gflop_per_sample,
    estimate_seconds_per_sample,
)
from uadnet.planning.hardware import HardwareInfo
from uadnet.planning.plan_and_preprocess import summarize_plans
from uadnet.planning.planner import (
    CPU_NATIVE_2D_MAX_PATCH_EDGE,
    PERCENTILE_HIGH_MAPS_TO,
    SMALL_VALIDATION_ANOMALIES,
    fullres_target_spacing,
    network_topology,
    plan_experiment,
)
from uadnet.plans import Plans, PlansError

CPU = HardwareInfo(device="cpu", bf16=False, num_cpus=2, memory_gb=24, gflops=100)
GPU = HardwareInfo(device="cuda", bf16=True, num_cpus=16, memory_gb=80, gflops=20000)


def five_peaks(bins=1024, peaks=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """A histogram over [0, 1] with equal mass at five intensities (bin centres)."""
    counts = np.zeros(bins, int)
    counts[[int(p * bins) for p in peaks]] = 100
    return counts.tolist()


def fingerprint(spacings, shapes, names=("T1",), ending=".nii.gz", extent=None, stats=None):
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    extent = extent if extent is not None else np.median(shapes * spacings, 0)
    cases = [{"identifier": f"c{i}", "spacing": list(s), "shape_before_crop": [int(v) for v in sh],
              "shape_after_crop": [int(v) for v in sh], "foreground_extent_mm": list(s * sh)}
             for i, (s, sh) in enumerate(zip(spacings, shapes))]
    stats = stats or {"mean": 100.0, "std": 10.0, "min": 0.0, "max": 300.0, "percentile_00_5": 5.0,
                      "percentile_02_0": 10.0, "percentile_98_0": 250.0, "percentile_99_5": 280.0}
    return {
        "dataset_name": "Dataset001_Test", "channel_names": {str(i): n for i, n in enumerate(names)},
        "file_ending": ending, "num_cases": len(cases), "is_2d": bool(all(shapes.min(1) == 1)),
        "median_spacing": np.median(spacings, 0).tolist(), "median_shape_after_crop": np.median(shapes, 0).tolist(),
        "median_foreground_extent_mm": list(extent), "median_foreground_fraction": 0.5, "foreground_methods": ["nonzero"],
        "intensity_statistics": {str(i): dict(stats) for i in range(len(names))},
        "normalized_histograms": {str(i): {s: five_peaks() for s in ("ct", "percentile", "rgb")}
                                  for i in range(len(names))},
        "cases": cases,
    }


def brain_1mm(n=20):
    rng = np.random.default_rng(0)
    return fingerprint([[1.0, 1.0, 1.0]] * n, rng.integers(135, 150, size=(n, 3)) + [0, 30, 0])


def check_topology(cfg):
    net = cfg.network
    assert len(net.features_per_stage) == len(net.kernel_sizes) == len(net.strides)
    total = np.prod(net.strides, axis=0)
    assert all(p % t == 0 for p, t in zip(cfg.patch_size, total)), "patch must divide by the total downsampling"
    smallest = np.asarray(cfg.patch_size) / total
    assert smallest.min() >= 4
    assert len(cfg.patch_size) == cfg.dim


def test_isotropic_brain_gets_2d_and_3d_and_reference_corruption_sizes():
    plans = plan_experiment(brain_1mm(), CPU)
    assert set(plans.configurations) == {"2d", "3d"}
    assert plans.default_configuration == "2d"
    assert plans.transpose_forward == [0, 1, 2]
    assert plans.configurations["3d"].spacing == [1.0, 1.0, 1.0]
    for cfg in plans.configurations.values():
        check_topology(cfg)
    # the reference 10-44 mm scales with a ~140 mm brain extent, drawn uniformly; validation anomalies follow the
    # training size law (validation.size_law null)
    lo, hi = plans.corruption.shape_size_mm
    assert 8.5 < lo < 10.5 and 38 < hi < 44
    assert plans.corruption.size_distribution == "uniform"
    assert plans.validation.size_law is None
    # and spots of 2-8 mm (at least 1-4 voxels): lesions of a few voxels
    assert plans.corruption.dag_small_shapes > 0 and plans.corruption.small_shape_size_mm == [2.0, 8.0]
    coarse = plan_experiment(fingerprint([[3.0, 3.0, 3.0]] * 10, [[60, 70, 60]] * 10), CPU)
    assert coarse.corruption.small_shape_size_mm == [3.0, 12.0]
    assert "+ up to 6 spots of [3.0, 12.0] mm" in summarize_plans(coarse)  # what uadnet_plan_and_preprocess prints
    # validation's small anomalies have the spots' sizes
    assert coarse.validation.small_anomalies > 0 and coarse.validation.small_size_mm == [3.0, 12.0]
    assert f"{SMALL_VALIDATION_ANOMALIES} small anomalies of [3.0, 12.0] mm per case" in summarize_plans(coarse)
    # CPU: a 2D slice larger than 128^2 keeps its native in-plane spacing (small lesions survive); the patch tiles it
    cfg2d = plans.configurations["2d"]
    assert cfg2d.spacing[1:] == [1.0, 1.0] and np.prod(cfg2d.patch_size) <= 128 * 128
    assert plans.compute.precision == "fp32"
    assert plans.methods.cold_ensemble.severities == [0.2, 0.4, 0.6, 0.8]
    assert plans.methods.synomaly.sign == -1  # T1: lesions typically hypointense
    # per-image MRI scaling leaves headroom above the 98th percentile; the codebook is in the same units
    assert [n.high_maps_to for n in plans.normalization] == [PERCENTILE_HIGH_MAPS_TO] * len(plans.normalization)
    assert max(max(c) for c in plans.corruption.intensity_codebook) <= PERCENTILE_HIGH_MAPS_TO + 1e-6


def test_gpu_plans_are_bigger_and_use_bf16():
    cpu, gpu = plan_experiment(brain_1mm(), CPU), plan_experiment(brain_1mm(), GPU)
    assert np.prod(gpu.configurations["3d"].patch_size) > np.prod(cpu.configurations["3d"].patch_size)
    assert gpu.configurations["2d"].spacing[1:] == [1.0, 1.0]  # no coarsening on a GPU
    assert gpu.compute.precision == "bf16"
    assert gpu.configurations["2d"].training.time_budget_minutes is None
    assert gpu.configurations["2d"].training.iterations == 100_000


def test_anisotropic_data_is_transposed_and_only_2d():
    # coarse axis stored last (x): 0.8 x 0.8 x 5 mm, (z, y, x) = (256, 256, 24) voxels
    fp = fingerprint([[0.8, 0.8, 5.0]] * 10, [[200, 220, 24]] * 10)
    plans = plan_experiment(fp, CPU)
    assert plans.transpose_forward == [2, 0, 1]
    assert plans.transpose_backward == [1, 2, 0]
    assert set(plans.configurations) == {"2d"}
    assert plans.original_median_spacing == [5.0, 0.8, 0.8]
    check_topology(plans.configurations["2d"])


def test_nnunet_anisotropy_rule_uses_10th_percentile_of_the_coarse_axis():
    z = np.array([3.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0, 5.0, 5.0, 5.0])
    spacings = np.stack([z, np.full(10, 0.7), np.full(10, 0.7)], 1)
    shapes = np.tile([30, 300, 300], (10, 1))
    target = fullres_target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(np.percentile(z, 10))
    assert target[1:] == [0.7, 0.7]
    # not enough voxels difference → median kept
    target = fullres_target_spacing(spacings, np.tile([200, 300, 300], (10, 1)))
    assert target[0] == 5.0


def test_2d_photographs_and_ct_normalisation():
    photo_stats = {"mean": 100.0, "std": 10.0, "min": 0.0, "max": 255.0, "percentile_00_5": 5.0,
                   "percentile_02_0": 10.0, "percentile_98_0": 250.0, "percentile_99_5": 254.0}
    plans = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 5, [[1, 300, 400]] * 5, names=("R", "G", "B"),
                                        ending=".png", stats=photo_stats), CPU)
    assert set(plans.configurations) == {"2d"}
    assert [n.scheme for n in plans.normalization] == ["rgb"] * 3
    # a 16-bit PNG (intensities above 255) is not scaled by /255
    sixteen = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 5, [[1, 300, 400]] * 5, names=("gray",),
                                          ending=".png", stats={**photo_stats, "max": 4095.0}), CPU)
    assert sixteen.normalization[0].scheme == "percentile"
    assert plans.corruption.shape_size_mm[1] == pytest.approx(44 * 300 / 150, rel=0.01)
    ct = plan_experiment(fingerprint([[2.0, 0.8, 0.8]] * 5, [[100, 400, 400]] * 5, names=("CT",)), CPU)
    n = ct.normalization[0]
    assert (n.scheme, n.low, n.high) == ("ct", 5.0, 280.0)


def test_photographs_on_a_cpu_take_more_smaller_patches_and_volume_slices_keep_theirs():
    """Natively 2D images on a CPU: the network planned for a 128² patch, trained on patches of at most
    CPU_NATIVE_2D_MAX_PATCH_EDGE² with the larger batch the same budget buys; 256² slices of a volume keep 128²
    patches, and a GPU keeps its own largest patch."""
    photo = fingerprint([[999.0, 1.0, 1.0]] * 5, [[1, 256, 256]] * 5, names=("R", "G", "B"), ending=".png")
    volume = fingerprint([[1.0, 1.0, 1.0]] * 5, [[120, 256, 256]] * 5)
    p_cpu = plan_experiment(photo, CPU, time_budget_minutes=20).configurations["2d"]
    v_cpu = plan_experiment(volume, CPU, time_budget_minutes=20).configurations["2d"]
    assert p_cpu.patch_size == [CPU_NATIVE_2D_MAX_PATCH_EDGE] * 2
    assert v_cpu.patch_size == [128, 128]
    check_topology(v_cpu)
    assert p_cpu.network == v_cpu.network  # the depth (receptive field) of the 128² patch is kept
    total = np.prod(p_cpu.network.strides, axis=0)
    assert all(p % t == 0 and p // t >= 2 for p, t in zip(p_cpu.patch_size, total))
    for cfg in (p_cpu, v_cpu):
        assert cfg.training.iterations >= 2000  # the budget still buys the planned steps
    # about the same pixels per step: the smaller patch is paid for with a larger batch
    p_px, v_px = np.prod(p_cpu.patch_size) * p_cpu.batch_size, np.prod(v_cpu.patch_size) * v_cpu.batch_size
    assert p_cpu.batch_size > v_cpu.batch_size and 0.7 < p_px / v_px < 1.5
    assert plan_experiment(photo, GPU).configurations["2d"].patch_size == [256, 256]
    # a photograph smaller than the cap is whole in one patch; one between the cap and 128² shrinks to the cap
    small = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 5, [[1, 64, 80]] * 5, names=("R", "G", "B"),
                                        ending=".png"), CPU).configurations["2d"]
    assert small.patch_size == [64, 80]
    mid = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 5, [[1, 110, 110]] * 5, names=("R", "G", "B"),
                                      ending=".png"), CPU).configurations["2d"]
    assert np.prod(mid.patch_size) <= CPU_NATIVE_2D_MAX_PATCH_EDGE ** 2 and min(mid.patch_size) >= 64


def test_network_topology_stops_pooling_small_and_coarse_axes():
    strides, kernels, patch = network_topology([20, 128, 128], [5.0, 1.0, 1.0])
    assert strides[1] == [1, 2, 2]  # the 5 mm axis is not pooled while it is much coarser
    assert kernels[0] == [1, 3, 3]
    assert patch[1] % np.prod(strides, 0)[1] == 0
    strides, _, patch = network_topology([9, 9], [1.0, 1.0])
    assert strides == [[1, 1], [2, 2]] and patch == [10, 10]


def test_budgets_shape_the_plans():
    fp = brain_1mm()
    small = plan_experiment(fp, CPU, memory_target_gb=0.1)
    big = plan_experiment(fp, CPU, memory_target_gb=8)
    assert small.configurations["2d"].batch_size < big.configurations["2d"].batch_size
    assert np.prod(small.configurations["3d"].patch_size) < np.prod(big.configurations["3d"].patch_size)
    short = plan_experiment(fp, CPU, time_budget_minutes=20).configurations["3d"]
    long = plan_experiment(fp, CPU, time_budget_minutes=200).configurations["3d"]
    for cfg, minutes in ((short, 20), (long, 200)):  # the planned iterations fill the budget
        t = cfg.training
        assert t.iterations * t.estimated_seconds_per_iteration == pytest.approx(minutes * 60, rel=0.01)
    # a short budget trades patch and batch size for enough optimiser steps
    assert short.training.iterations >= 1000
    assert np.prod(long.patch_size) * long.batch_size > np.prod(short.patch_size) * short.batch_size
    assert min(short.patch_size) >= 32


def test_cpu_2d_widths_double_from_the_second_stage_and_buy_steps():
    """2D on a CPU: [16, 16, 32, 64, ...] capped at 64, and a 20-minute budget plans at least 2000 steps; 3D on a CPU
    and 2D on a GPU double from the first stage."""
    cpu, gpu = plan_experiment(brain_1mm(), CPU), plan_experiment(brain_1mm(), GPU)
    widths = cpu.configurations["2d"].network.features_per_stage
    assert widths[:4] == [16, 16, 32, 64] and max(widths) == 64
    assert cpu.configurations["2d"].training.iterations >= 2000
    assert cpu.configurations["3d"].network.features_per_stage[:3] == [16, 32, 64]
    assert gpu.configurations["2d"].network.features_per_stage[:2] == [32, 64]


def test_the_cost_model_on_a_hand_made_network():
    """Two stages (8² then 4² voxels, widths 4 and 8, 3x3 kernels): conv GFLOP = 3 (forward + backward) · 2 (FLOP
    per multiply-add) · (64·9·16 + 16·9·64) · 2 convs · 2 (encoder and decoder) / 1e9, plus
    ``ACTIVATION_FLOP_EQUIVALENT`` FLOP per activation value (64·4 + 16·8 = 384); at 1 and 2 GFLOP/s."""
    args = ([8, 8], [[1, 1], [2, 2]], [[3, 3], [3, 3]], [4, 8], 2)
    assert estimate_gflop_per_sample(*args) == pytest.approx(3 * 2 * (64 * 9 * 16 + 16 * 9 * 64) * 2 * 2 / 1e9)
    expected = 442368e-9 + ACTIVATION_FLOP_EQUIVALENT * 384 / 1e9
    assert estimate_seconds_per_sample(*args, speed_gflops=1.0) == pytest.approx(expected)
    assert estimate_seconds_per_sample(*args, speed_gflops=2.0) == pytest.approx(expected / 2)


def test_the_measured_bf16_speedup_sets_the_estimate():
    """A CPU whose bf16 matmuls run 4x faster (measured) plans half the fp32 seconds per training sample (the
    training speed-up is the square root), one that was not measured (an older profile) the constant; the same
    patch and network either way."""
    from dataclasses import replace

    from uadnet.planning.cost_model import BF16_SPEEDUP

    fp = brain_1mm()
    bf16 = replace(CPU, bf16=True)

    def per_sample(hardware):
        cfg = plan_experiment(fp, hardware, time_budget_minutes=20).configurations["2d"]
        return cfg.training.estimated_seconds_per_iteration / cfg.batch_size, cfg.patch_size

    fp32, patch = per_sample(CPU)
    measured, measured_patch = per_sample(replace(bf16, bf16_speedup=4.0))
    assumed, _ = per_sample(bf16)
    assert measured_patch == patch
    assert measured == pytest.approx(fp32 / 2, rel=0.01)
    assert assumed == pytest.approx(fp32 / BF16_SPEEDUP, rel=0.01)


def test_degenerate_inputs_terminate_with_sane_plans():
    # a tiny memory target with 3 mm slices used to loop forever while shrinking the patch
    fp = fingerprint([[3.0, 1.0, 1.0]] * 4, [[40, 300, 300]] * 4)
    plans = plan_experiment(fp, CPU, memory_target_gb=0.001)
    for cfg in plans.configurations.values():
        check_topology(cfg)
        assert min(cfg.patch_size) >= 8
    # one-slice images stored with the singleton on y: that axis becomes the slice axis, no 3d, sizes in plane
    fp = fingerprint([[2.0, 1.0, 2.0]] * 4, [[150, 1, 150]] * 4, extent=[300.0, 0.0, 300.0])
    plans = plan_experiment(fp, CPU)
    assert plans.transpose_forward == [1, 0, 2]
    assert set(plans.configurations) == {"2d"}
    assert plans.configurations["2d"].patch_size[0] > 1
    assert plans.corruption.shape_size_mm == pytest.approx([20.0, 88.0])


def test_planner_is_pure_and_plans_round_trip_through_json(tmp_path):
    fp = brain_1mm()
    before = copy.deepcopy(fp)
    a, b = plan_experiment(fp, CPU), plan_experiment(fp, CPU)
    assert fp == before
    assert a == b
    a.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path / "plans.json") == a
    d = json.loads((tmp_path / "plans.json").read_text())
    d["configurations"]["2d"]["patch_size"] = [64, 64]  # a hand edit is honoured
    assert Plans.from_dict(d).configuration("2d").patch_size == [64, 64]
    d["configurations"]["2d"]["pacth_size"] = [1]
    with pytest.raises(PlansError, match="pacth_size"):
        Plans.from_dict(d)
    d = a.to_dict()
    d["corruption"]["shape_size_mm"] = "big"
    with pytest.raises(PlansError, match="corruption.shape_size_mm"):
        Plans.from_dict(d)
    with pytest.raises(PlansError, match="'3d' is not|configuration '4d'"):
        a.configuration("4d")


def test_synomaly_sign_from_channel_names():
    from uadnet.planning.planner import synomaly_sign

    assert synomaly_sign(["T1"]) == -1 and synomaly_sign(["t1w", "T1_native"]) == -1
    for names in (["T1c"], ["T1ce"], ["T1Gd"], ["t1_post"], ["T1", "FLAIR"], ["T2"], ["CT"]):
        assert synomaly_sign(names) == 1, names


def test_a_measured_reference_step_scales_the_2d_estimate_only():
    """A profile with ``step_factor_2d`` (the reference 2D training step measured on the machine, in the plans'
    precision) divides the 2D training speed by it and the trainer's overhead — bf16 included, no √ rule — and
    leaves 3D (and profiles without it) on the constants; a machine measured twice as slow gets a plan that still
    fits the budget."""
    from dataclasses import replace

    from uadnet.planning.cost_model import CONV_EFFICIENCY, TRAINER_OVERHEAD, training_speed_gflops

    slow = replace(CPU, step_factor_2d=2.0)
    assert training_speed_gflops(slow, 2) == pytest.approx(100 * CONV_EFFICIENCY / (2.0 * TRAINER_OVERHEAD))
    assert training_speed_gflops(slow, 3) == training_speed_gflops(CPU, 3) == pytest.approx(100 * CONV_EFFICIENCY)
    bf16 = replace(CPU, bf16=True, bf16_speedup=4.0, step_factor_2d=0.5)
    assert training_speed_gflops(bf16, 2) == pytest.approx(100 * CONV_EFFICIENCY / (0.5 * TRAINER_OVERHEAD))
    assert training_speed_gflops(bf16, 3) == pytest.approx(100 * CONV_EFFICIENCY * 2.0)
    fp = brain_1mm()
    base, measured = (plan_experiment(fp, h, time_budget_minutes=20).configurations for h in (CPU, slow))
    assert measured["3d"] == base["3d"]
    for cfg in (base["2d"], measured["2d"]):
        assert cfg.training.estimated_seconds_per_iteration * cfg.training.iterations <= 20 * 60 * 1.01
        assert cfg.training.iterations >= 2000
    net = measured["2d"].network
    per_sample = estimate_seconds_per_sample(measured["2d"].patch_size, net.strides, net.kernel_sizes,
                                             net.features_per_stage, net.n_conv_per_stage,
                                             training_speed_gflops(slow, 2))
    assert measured["2d"].training.estimated_seconds_per_iteration == pytest.approx(
        per_sample * measured["2d"].batch_size, rel=1e-3)
    assert measured["2d"].batch_size < base["2d"].batch_size
