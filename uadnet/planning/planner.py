"""The planner: a pure function ``fingerprint (+ hardware) → Plans``.

Rules (each result lands in ``uadnet_plans.json`` and can be edited there):

* axes are transposed so the coarsest axis comes first (it is the slice axis of the 2D configuration);
* target spacing = median spacing, except for strongly anisotropic data (nnU-Net's rule: coarsest axis more
  than 3x the finest *and* fewer than a third of the voxels) where the coarse axis takes its 10th percentile;
* ``2d`` always exists; ``3d`` only for 3D data whose target spacing is not too anisotropic (ratio <= 3) and
  whose median image has at least 8 voxels along every axis;
* patch = the median foreground-cropped image (whole slices in 2D), rounded to the network's downsampling,
  shrunk until the compute target fits (natively 2D images on a CPU: then shrunk to at most
  ``CPU_NATIVE_2D_MAX_PATCH_EDGE``², the network kept, for more samples per step); the 2D in-plane spacing is not
  coarsened on a CPU
  (``MAX_CPU_INPLANE_COARSENING``: coarsening a 256² photograph 2x to see whole images halved the development
  AP and cut small-lesion AP five-fold; the sliding window tiles the native grid instead);
* network depth: downsample an axis while it stays >= 4 voxels (and is not much coarser than the others);
  widths double per stage from a base, capped (2D on a CPU: from the second stage, capped at 64 —
  ``CPU_2D_DOUBLING_STARTS_AT_STAGE``);
* under a time budget the patch shrinks (not below 32 voxels per axis) until a batch of 2 leaves room for
  ``MIN_ITERATIONS`` (2000 in 2D, 1000 in 3D); the batch size comes from the memory target, then shrinks until that
  many iterations fit (at least 2); the seconds per iteration come from a cost model of conv FLOPs plus a
  memory-bound term per activation value, scaled by the measured matmul rate (``uadnet.planning.cost_model``);
  3D batches hold at most 5 % of all training voxels (nnU-Net's rule);
* test-time mirroring on every patch axis (``inference.mirror_axes``; training mirrors on every axis too):
  measured on the development data in documentation/benchmarks.md;
* corruption sizes scale the reference 10-44 mm (on a ~150 mm brain) to the data's smaller in-plane foreground
  extent, drawn uniformly (``corruption.size_distribution``; ``log_uniform`` from a few voxels was measured and
  is worse at a CPU budget: documentation/benchmarks.md, development runs);
* normalisation scheme per channel from its name and file type (``normalization_scheme_for``); the intensity
  codebook = ``codebook_size`` k-means centroids of the fingerprint's histogram under that scheme, scaled to the
  channel's ``high_maps_to``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from uadnet.imageio import reader_writer_class
from uadnet.planning.cost_model import estimate_memory_gb, estimate_seconds_per_sample, training_speed_gflops
from uadnet.planning.hardware import HardwareInfo
from uadnet.plans import (
    ColdEnsemblePlan,
    ComputePlan,
    ConfigurationPlan,
    CorruptionPlan,
    ForegroundPlan,
    InferencePlan,
    MethodsPlan,
    NetworkPlan,
    NormalizationPlan,
    Plans,
    SynomalyPlan,
    TrainingPlan,
    ValidationPlan,
)
from uadnet.preprocessing.normalization import normalization_scheme_for

ANISOTROPY_THRESHOLD = 3.0
REFERENCE_SHAPE_SIZE_MM = (10.0, 44.0)  # DISYRE v2 on 1 mm brain MRI
REFERENCE_EXTENT_MM = 150.0  # typical in-plane brain extent those sizes were chosen for
# Training shape sizes: the reference's uniform 10-44 mm (scaled). Log-uniform sizes from 2 voxels (with the edge blur
# capped by the shape size) cut the development brain's test AP from 0.123 to 0.011 at the AVX2 budget (1003
# iterations of 18 slices): small training shapes did not teach small lesions and cost the large ones.
SIZE_DISTRIBUTION = "uniform"
# Besides the one reference-sized shape, DAG adds 0 to SMALL_SHAPES spots of SMALL_SHAPE_SIZE_MM (at least 1 to 4
# voxels of the finest in-plane axis) so the restorer also learns to correct lesions of a few voxels (development
# brain, 2 mm, AVX2 budget: pooled AP 0.366 / 0.298 against 0.326 / 0.264 in two seeds, small-lesion AP of the
# unsmoothed maps 0.031 against 0.0004; up to 12 spots: 0.226; documentation/benchmarks.md).
SMALL_SHAPES = 6
SMALL_SHAPE_SIZE_MM = (2.0, 8.0)
# Validation adds this many anomalies of the same small sizes to each case and weighs them as much as its large ones
# in its choices (postprocessing, checkpoint), so a choice that erases small lesions is no longer free
# (documentation/benchmarks.md, session 15).
SMALL_VALIDATION_ANOMALIES = 4
MIN_FEATURE_SIZE = 4
MIN_PATCH_EDGE = 32  # voxels; patches are not shrunk below this (or the image) to meet a target
NUM_SEVERITIES = 4
# Per-image percentile normalisation maps the upper percentile (98th) to this value, not to 1: lesions brighter than
# the brightest healthy tissue keep their contrast instead of being clipped together with it (demo brain, 4-minute
# runs of cold_ensemble: test pooled AP 0.49 with 0.7 vs 0.09 with 1.0; documentation/benchmarks.md).
PERCENTILE_HIGH_MAPS_TO = 0.7
# a time budget shrinks the batch until at least this many optimiser steps fit (2D: the CPU 2D widths' saving buys steps)
MIN_ITERATIONS = {2: 2000, 3: 1000}
# Largest in-plane coarsening of 2D slices on a CPU (1 = none). Was 2: a 256² RGB photograph then trained and was
# scored at ~128² (development photographs, AVX2 budget: pooled AP 0.050 coarsened vs 0.102 native, small-lesion AP
# 0.018 vs 0.088, case AUROC 0.42 vs 0.74; documentation/benchmarks.md). Cost of native: more tiles per slice at
# prediction (e.g. 9 instead of 1 for 256² with 128² patches), less context per training patch.
MAX_CPU_INPLANE_COARSENING = 1.0
# Natively 2D images (photographs) on a CPU: the network planned for the largest patch (128², six stages) trains on
# patches of at most this edge², the budget buying a larger batch (256² RGB, AVX2 budget: 9 x 96² instead of 5 x 128²).
# Development photographs, three seeds: case AUROC 0.810 -> 0.830, small-lesion AP 0.522 -> 0.576, pooled 0.154 ->
# 0.161; with the five-stage network of a 96² patch small lesions fell (0.468). Volumes keep whole slices
# (documentation/benchmarks.md, "Photographs: more, smaller patches").
CPU_NATIVE_2D_MAX_PATCH_EDGE = 96
# per device: (max 2D patch voxels, max 3D patch voxels, base width, max width 2D, max width 3D, max batch)
DEVICE_TARGETS = {
    "cpu": (128 * 128, 64 ** 3, 16, 64, 128, 32),
    "gpu": (256 * 256, 128 ** 3, 32, 256, 320, 96),
}
# 2D on a CPU: [16, 16, 32, 64, 64] instead of [16, 32, 64, 128, 128], 1.9x cheaper per fp32 training step; the budget
# buys the steps. Development data at the AVX2 budget (benchmarks.md): brain pooled AP 0.25-0.35 against 0.17,
# photographs 0.09-0.18 against 0.07-0.10 with the small lesions kept (halving the first stage as well lost them).
# 3D and GPU widths double from the first stage.
CPU_2D_DOUBLING_STARTS_AT_STAGE = 1
CPU_TIME_BUDGET_MINUTES = 20.0
GPU_ITERATIONS = 100_000  # the reference training length


def transpose_for(median_spacing: Sequence[float], median_shape: Sequence[float], is_2d: bool) -> list[int]:
    """Slice axis first: a one-voxel axis (2D data, wherever it is stored), else the coarsest axis; identity for
    near-isotropic spacing (max/min < 1.2)."""
    s, n = np.asarray(median_spacing, float), np.asarray(median_shape, float)
    single = [a for a in range(3) if n[a] <= 1]
    if single:
        first = 0 if 0 in single else single[0]
    elif is_2d:
        first = 0
    elif s.max() < 1.2 * s.min():
        return [0, 1, 2]
    else:
        first = int(np.argmax(s))
    return [first] + [a for a in range(3) if a != first]


def fullres_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> list[float]:
    """Median spacing; for strongly anisotropic data the coarse axis gets its 10th percentile (nnU-Net's rule)."""
    target = np.median(spacings, 0)
    target_shape = np.median(shapes * spacings / target, 0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = target_shape[worst] * ANISOTROPY_THRESHOLD < min(target_shape[others])
    if aniso_spacing and aniso_voxels:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
    return [float(t) for t in target]


def network_topology(patch: Sequence[int], spacing: Sequence[float], max_stages: int = 6
                     ) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Strides and kernel sizes per stage, and the patch rounded up to a multiple of the total downsampling.

    An axis is downsampled while it stays >= ``MIN_FEATURE_SIZE`` voxels and its current spacing is at most
    twice the finest; kernels are 1 along an axis that is still much coarser than the others (3 otherwise).
    """
    size, sp = [float(p) for p in patch], [float(s) for s in spacing]
    strides, kernels = [[1] * len(size)], []
    for stage in range(max_stages):
        kernels.append([3 if s <= 2 * min(sp) else 1 for s in sp])
        if stage == max_stages - 1:
            break
        stride = [2 if n / 2 >= MIN_FEATURE_SIZE and s <= 2 * min(sp) else 1 for n, s in zip(size, sp)]
        if all(st == 1 for st in stride):
            break
        strides.append(stride)
        size = [n / st for n, st in zip(size, stride)]
        sp = [s * st for s, st in zip(sp, stride)]
    total = np.prod(strides, 0)
    rounded = [int(math.ceil(p / t) * t) for p, t in zip(patch, total)]
    if list(rounded) != [int(p) for p in patch]:  # rounding may allow more downsampling: settle on the final patch
        return network_topology(rounded, spacing, max_stages)
    return strides, kernels, rounded


def _features(num_stages: int, base: int, cap: int, doubling_starts_at: int = 0) -> list[int]:
    """Width per stage: ``base`` up to stage ``doubling_starts_at``, then doubling per stage, capped at ``cap``."""
    return [min(base * 2 ** max(s - doubling_starts_at, 0), cap) for s in range(num_stages)]


def _fit_patch(median_shape: Sequence[float], spacing: Sequence[float], max_voxels: int, base: int, cap: int,
               memory_target_gb: float, bytes_per_value: float, max_seconds_per_sample: float | None,
               speed_gflops: float, doubling_starts_at: int = 0
               ) -> tuple[list[list[int]], list[list[int]], list[int], list[int]]:
    """Start from the median shape; shrink the axis with the largest extent (mm) until the patch has at most
    ``max_voxels``, a batch of 2 fits ``memory_target_gb`` and (if given) one sample trains within
    ``max_seconds_per_sample``. Axes never shrink below ``MIN_PATCH_EDGE`` voxels (or their median size).
    Returns strides, kernels, patch, features."""
    patch = [max(round(n), 1) for n in median_shape]
    floor = [min(p, MIN_PATCH_EDGE) for p in patch]
    while True:
        strides, kernels, rounded = network_topology(patch, spacing)
        features = _features(len(kernels), base, cap, doubling_starts_at)
        seconds = estimate_seconds_per_sample(rounded, strides, kernels, features, 2, speed_gflops)
        fits = (np.prod(rounded) <= max_voxels
                and estimate_memory_gb(rounded, strides, features, 2, 2, bytes_per_value) <= memory_target_gb
                and (max_seconds_per_sample is None or seconds <= max_seconds_per_sample))
        shrinkable = [a for a in range(len(patch)) if patch[a] > floor[a]]
        if fits or not shrinkable:
            return strides, kernels, rounded, features
        axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
        patch[axis] = max(int(patch[axis] * 0.9), floor[axis])


def _shrink_in_strides(patch: Sequence[int], spacing: Sequence[float], strides: Sequence[Sequence[int]],
                       max_voxels: int) -> list[int]:
    """``patch`` shrunk in steps of the network's total downsampling (the axis with the largest extent in mm first)
    until it has at most ``max_voxels``; every axis keeps at least two such steps. The network is unchanged."""
    total = [int(t) for t in np.prod(strides, 0)]
    patch = [int(p) for p in patch]
    while np.prod(patch) > max_voxels:
        shrinkable = [a for a in range(len(patch)) if patch[a] - total[a] >= 2 * total[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
        patch[axis] -= total[axis]
    return patch


def plan_configuration(name: str, dim: int, spacing: list[float], median_shape: Sequence[float],
                       dataset_voxels: float, hardware: HardwareInfo, memory_target_gb: float,
                       time_budget_minutes: float | None, plans_name: str,
                       max_sample_voxels: int | None = None) -> ConfigurationPlan:
    """One configuration: patch, topology, batch size and training length (``spacing``/shape in (z, y, x)).
    ``max_sample_voxels``: the patch planned with its network is then shrunk to at most this many voxels, the
    network kept (its depth, so its receptive field, stays that of the larger patch)."""
    targets = DEVICE_TARGETS["cpu" if hardware.device == "cpu" else "gpu"]
    max_voxels, base, cap = (targets[0], targets[2], targets[3]) if dim == 2 else (targets[1], targets[2], targets[4])
    axes = slice(1, 3) if dim == 2 else slice(0, 3)
    n_conv = 2
    bytes_per_value = 3.0 if hardware.bf16 else 4.0
    speed = training_speed_gflops(hardware, dim)
    # under a time budget a batch of 2 must leave room for MIN_ITERATIONS[dim] steps
    max_seconds = None if time_budget_minutes is None else time_budget_minutes * 60 / (2 * MIN_ITERATIONS[dim])
    delay = CPU_2D_DOUBLING_STARTS_AT_STAGE if dim == 2 and hardware.device == "cpu" else 0
    strides, kernels, patch, features = _fit_patch(median_shape[axes], spacing[axes], max_voxels, base, cap,
                                                   memory_target_gb, bytes_per_value, max_seconds, speed, delay)
    if max_sample_voxels is not None:
        patch = _shrink_in_strides(patch, spacing[axes], strides, max_sample_voxels)
    per_sample = estimate_memory_gb(patch, strides, features, n_conv, 1, bytes_per_value)
    batch = int(min(targets[5], max(memory_target_gb // per_sample, 1)))
    if dim == 3:  # nnU-Net's cap: one batch covers at most 5 % of all training voxels (2D samples are many)
        batch = min(batch, int(0.05 * dataset_voxels / np.prod(patch)))
    seconds_per_sample = estimate_seconds_per_sample(patch, strides, kernels, features, n_conv, speed)
    if time_budget_minutes is not None:  # the batch shrinks until MIN_ITERATIONS[dim] steps fit
        batch = min(batch, int(time_budget_minutes * 60 / (MIN_ITERATIONS[dim] * seconds_per_sample)))
    batch = max(batch, 2)
    seconds = seconds_per_sample * batch
    if time_budget_minutes is None:
        iterations = GPU_ITERATIONS
    else:
        iterations = int(np.clip(time_budget_minutes * 60 / seconds, 100, GPU_ITERATIONS))
    validation_every = int(np.clip(iterations // 10, 50, 2500))
    return ConfigurationPlan(
        data_identifier=f"{plans_name}_{name}",
        dim=dim,
        spacing=[float(s) for s in spacing],
        patch_size=[int(p) for p in patch],
        batch_size=batch,
        median_image_size_in_voxels=[round(n) for n in median_shape],
        network=NetworkPlan(dim=dim, features_per_stage=features, kernel_sizes=kernels, strides=strides,
                            n_conv_per_stage=n_conv),
        training=TrainingPlan(iterations=iterations, time_budget_minutes=time_budget_minutes,
                              estimated_seconds_per_iteration=round(seconds, 4),
                              warmup_iterations=min(500, iterations // 20), validation_every=validation_every,
                              checkpoint_every=validation_every, num_workers=max(1, min(hardware.num_cpus - 1, 8))),
        inference=InferencePlan(mirror_axes=list(range(dim))),  # every patch axis, as training mirrors
        resample_slice_axis=dim == 3,
    )


def synomaly_sign(channel_names: Sequence[str]) -> int:
    """+1 (anomalies brighter) unless every channel is a native T1, where lesions are typically dark
    (contrast-enhanced T1 -- T1c, T1ce, T1Gd, T1-post -- counts as bright)."""
    def native_t1(name: str) -> bool:
        n = name.strip().lower()
        return n.startswith("t1") and not re.search(r"gd|post|ce|contrast|^t1[-_ ]?c", n)
    return -1 if all(native_t1(n) for n in channel_names) else 1


def intensity_codebook(histogram: Sequence[float], size: int | str = 5, seed: int = 0) -> list[float]:
    """Sorted k-means centroids of intensities given as a histogram over [0, 1] (bin centres weighted by counts).
    ``size="auto"`` picks k in 2..8 by silhouette score on 5000 seeded draws; k never exceeds the occupied bins."""
    counts = np.asarray(histogram, np.float64)
    centres = (np.arange(counts.size) + 0.5) / counts.size
    occupied = counts > 0
    values, weights = centres[occupied].reshape(-1, 1), counts[occupied]
    if len(values) <= 1:
        return [float(v) for v in values.ravel()]
    if size == "auto":
        rng = np.random.default_rng(seed)
        sub = values[rng.choice(len(values), 5000, p=weights / weights.sum())]
        scores = {k: silhouette_score(sub, KMeans(k, n_init=3, random_state=seed).fit_predict(sub))
                  for k in range(2, min(8, len(values)) + 1) if len(np.unique(sub)) > k}
        k = max(scores, key=scores.get) if scores else 2
    else:
        k = min(int(size), len(values))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(values, sample_weight=weights)
    return sorted(round(float(c), 6) for c in km.cluster_centers_.ravel())


def plan_experiment(fingerprint: dict[str, Any], hardware: HardwareInfo | None = None,
                    memory_target_gb: float | None = None, time_budget_minutes: float | None = -1.0,
                    plans_name: str = "uadnetPlans", reader_override: str | None = None,
                    codebook_size: int | str = 5, high_maps_to: float = PERCENTILE_HIGH_MAPS_TO) -> Plans:
    """Plan preprocessing, networks, training, corruption and inference from a dataset fingerprint.

    ``memory_target_gb``: training memory per configuration (default 4 on CPU, 8 on GPU).
    ``time_budget_minutes``: training budget; -1 picks the device default (20 min on CPU, none on GPU); 0 or
    None: no budget.
    ``codebook_size``: intensity classes per channel (or ``"auto"``); ``high_maps_to``: where the upper percentile
    of ``percentile``-normalised channels lands (the codebook follows it).
    """
    if not 0.0 < high_maps_to <= 1.0:
        raise ValueError(f"high_maps_to must lie in (0, 1], got {high_maps_to}")
    hardware = hardware or HardwareInfo()
    on_cpu = hardware.device == "cpu"
    if memory_target_gb is None:
        memory_target_gb = 4.0 if on_cpu else 8.0
    if time_budget_minutes is not None and time_budget_minutes < 0:
        time_budget_minutes = CPU_TIME_BUDGET_MINUTES if on_cpu else None
    elif time_budget_minutes == 0:
        time_budget_minutes = None
    channel_names: dict[str, str] = fingerprint["channel_names"]
    names = [channel_names[str(i)] for i in range(len(channel_names))]
    file_ending = fingerprint["file_ending"]
    median_shape_raw = fingerprint["median_shape_after_crop"]
    is_2d = bool(fingerprint["is_2d"] or min(median_shape_raw) <= 1)
    cases = fingerprint["cases"]

    tf = transpose_for(fingerprint["median_spacing"], median_shape_raw, is_2d)
    tb = [int(i) for i in np.argsort(tf)]
    spacings = np.array([[c["spacing"][a] for a in tf] for c in cases], float)
    shapes = np.array([[c["shape_after_crop"][a] for a in tf] for c in cases], float)
    target = fullres_target_spacing(spacings, shapes)

    configurations: dict[str, ConfigurationPlan] = {}
    # 2D: slices along axis 0, in-plane spacing as planned (coarsened on CPU only if MAX_CPU_INPLANE_COARSENING > 1)
    spacing_2d = list(target)
    inplane = np.median(shapes[:, 1:] * spacings[:, 1:] / np.asarray(target[1:]), 0)
    max_2d = DEVICE_TARGETS["cpu" if on_cpu else "gpu"][0]
    if on_cpu and np.prod(inplane) > max_2d and MAX_CPU_INPLANE_COARSENING > 1:
        factor = min(math.sqrt(np.prod(inplane) / max_2d), MAX_CPU_INPLANE_COARSENING)
        spacing_2d[1:] = [s * factor for s in target[1:]]
        inplane = inplane / factor
    median_2d = [float(np.median(shapes[:, 0])), *inplane]
    voxels_2d = float(np.sum(shapes[:, 0] * np.prod(shapes[:, 1:] * spacings[:, 1:] / spacing_2d[1:], axis=1)))
    native_2d_cap = CPU_NATIVE_2D_MAX_PATCH_EDGE ** 2 if on_cpu and is_2d else None
    configurations["2d"] = plan_configuration("2d", 2, spacing_2d, median_2d, voxels_2d, hardware,
                                              memory_target_gb, time_budget_minutes, plans_name, native_2d_cap)
    median_3d = np.median(shapes * spacings / np.asarray(target), 0)
    if not is_2d and max(target) / min(target) <= ANISOTROPY_THRESHOLD and min(median_3d) >= 2 * MIN_FEATURE_SIZE:
        voxels_3d = float(np.sum(np.prod(shapes * spacings / np.asarray(target), axis=1)))
        configurations["3d"] = plan_configuration("3d", 3, target, list(median_3d), voxels_3d, hardware,
                                                  memory_target_gb, time_budget_minutes, plans_name)

    normalization = []
    for ch, name in enumerate(names):
        stats = fingerprint["intensity_statistics"][str(ch)]
        scheme = normalization_scheme_for(name, file_ending, stats["max"])
        if scheme == "ct":
            normalization.append(NormalizationPlan(name, scheme, low=stats["percentile_00_5"],
                                                   high=stats["percentile_99_5"]))
        elif scheme == "percentile":  # per-image scaling: keep hyperintensities above the percentile distinct
            normalization.append(NormalizationPlan(name, scheme, high_maps_to=high_maps_to))
        else:
            normalization.append(NormalizationPlan(name, scheme))

    # sizes follow the in-plane foreground extent (the slice axis may be thin or absent)
    extent = np.asarray(fingerprint["median_foreground_extent_mm"], float)[tf][1:]
    extent = extent[extent > 0]
    smallest = float(extent.min()) if extent.size else REFERENCE_EXTENT_MM
    size_mm = [round(r * smallest / REFERENCE_EXTENT_MM, 2) for r in REFERENCE_SHAPE_SIZE_MM]
    # the histograms are in the scheme's [0, 1] units (high → 1); rescale the centroids to each high_maps_to
    codebook = [[round(v * n.high_maps_to, 6) for v in intensity_codebook(
        fingerprint["normalized_histograms"][str(ch)][n.scheme], codebook_size)] for ch, n in enumerate(normalization)]
    finest = float(min(spacing_2d[1:]))
    small_mm = [round(max(SMALL_SHAPE_SIZE_MM[0], finest), 2), round(max(SMALL_SHAPE_SIZE_MM[1], 4 * finest), 2)]
    corruption = CorruptionPlan(shape_size_mm=size_mm, intensity_codebook=codebook,
                                size_distribution=SIZE_DISTRIBUTION, dag_small_shapes=SMALL_SHAPES,
                                small_shape_size_mm=small_mm)

    severities = [round((k + 1) / (NUM_SEVERITIES + 1), 4) for k in range(NUM_SEVERITIES)]
    methods = MethodsPlan(cold_ensemble=ColdEnsemblePlan(severities=severities),
                          synomaly=SynomalyPlan(sign=synomaly_sign(names)))
    compute = ComputePlan(device=hardware.device, precision="bf16" if hardware.bf16 else "fp32",
                          compile=hardware.device == "cuda")
    median_spacing = [float(fingerprint["median_spacing"][a]) for a in tf]
    median_shape = [round(fingerprint["median_shape_after_crop"][a]) for a in tf]
    return Plans(
        dataset_name=fingerprint["dataset_name"],
        plans_name=plans_name,
        file_ending=file_ending,
        image_reader_writer=reader_override or reader_writer_class(file_ending).__name__,
        channel_names=dict(channel_names),
        transpose_forward=tf,
        transpose_backward=tb,
        original_median_spacing=median_spacing,
        original_median_shape=median_shape,
        foreground=ForegroundPlan(),
        normalization=normalization,
        configurations=configurations,
        default_configuration="2d",
        corruption=corruption,
        validation=ValidationPlan(small_anomalies=SMALL_VALIDATION_ANOMALIES, small_size_mm=small_mm),
        methods=methods,
        compute=compute,
    )
