"""The planner's training cost model: activation memory and seconds per training sample of a UNet plan, from the
measured matmul rate of the machine (:class:`uadnet.planning.hardware.HardwareInfo`), for 2D calibrated by its
measured reference training step where the profile has one. Pure functions; units: voxels, GFLOP, GB, seconds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uadnet.planning.hardware import HardwareInfo

# Training cost model: seconds = (conv GFLOP + ACTIVATION_FLOP_EQUIVALENT × activation values / 1e9) / (fp32 matmul
# rate × CONV_EFFICIENCY); the activation term is the memory-bound work that does not shrink with the widths' square.
# Fitted on a 2-core AMD EPYC (training steps of nine 2D networks of widths 8-128: within ±13 %; `uadnet_train` of the
# CPU 2D plan ran 15-30 % slower than estimated before `step_factor_2d`; the trainer fits the run to the budget).
CONV_EFFICIENCY = 0.72
ACTIVATION_FLOP_EQUIVALENT = 5000.0  # per value of Σ_stages voxels × features of one sample
# bf16 autocast's *training* speed-up is about the square root of the bf16 matmul speed-up (the optimiser, EMA,
# GroupNorm and casts stay fp32): 1.43x training for 2.0x matmul (grid value; 2.2x raw) on an AVX512-BF16 CPU
# without AMX (benchmarks/planner_estimate.py); 2.7-3.8x training was measured on an AMX machine, whose matmul
# speed-up was not recorded. BF16_SPEEDUP: the training speed-up assumed when the hardware profile has no measured
# matmul speed-up (profiles written before it was measured).
BF16_SPEEDUP = 3.0
# `uadnet_train` per iteration over the network's fastest training step (what `step_factor_2d` calibrates): the data
# worker on the same cores, EMA, bookkeeping, and typical against fastest steps. Fitted on a 2-core AMD EPYC:
# 1.06-1.19 for the CPU 2D plan of the development brain (batch 14 of 80²; fp32, the AVX2 code path, bf16), ~1.0 for
# the demo's (batch 32 of 96 × 80; benchmarks/planner_estimate.py). Applies only with a measured factor, so profiles
# without one plan as before.
TRAINER_OVERHEAD = 1.1


def stage_voxels(patch: Sequence[int], strides: list[list[int]]) -> list[float]:
    """Voxels of one sample at each stage's resolution (the patch divided by the strides so far)."""
    size, out = np.asarray(patch, float), []
    for st in strides:
        size = size / np.asarray(st)
        out.append(float(np.prod(size)))
    return out


def activation_values(patch: Sequence[int], strides: list[list[int]], features: list[int]) -> float:
    """Σ over stages of voxels × features: one sample's values per layer output, the unit of both estimates below."""
    return sum(v * f for v, f in zip(stage_voxels(patch, strides), features))


def estimate_memory_gb(patch: Sequence[int], strides: list[list[int]], features: list[int], n_conv: int,
                       batch_size: int, bytes_per_value: float = 4.0) -> float:
    """Rough training activation memory: every conv, norm and activation output of encoder and decoder kept."""
    values = activation_values(patch, strides, features) * n_conv * 2 * 3
    return batch_size * values * bytes_per_value * 1.5 / 1024 ** 3


def estimate_gflop_per_sample(patch: Sequence[int], strides: list[list[int]], kernels: list[list[int]],
                              features: list[int], n_conv: int) -> float:
    """Forward + backward GFLOP of one training sample (3x the forward pass of encoder and decoder convs)."""
    flops = sum(2 * v * int(np.prod(k)) * f * f * n_conv * 2
                for v, k, f in zip(stage_voxels(patch, strides), kernels, features))
    return 3 * flops / 1e9


def estimate_seconds_per_sample(patch: Sequence[int], strides: list[list[int]], kernels: list[list[int]],
                                features: list[int], n_conv: int, speed_gflops: float) -> float:
    """Training seconds per sample at ``speed_gflops`` (:func:`training_speed_gflops`): conv GFLOP plus
    ``ACTIVATION_FLOP_EQUIVALENT`` per :func:`activation_values` value."""
    gflop = (estimate_gflop_per_sample(patch, strides, kernels, features, n_conv)
             + ACTIVATION_FLOP_EQUIVALENT * activation_values(patch, strides, features) / 1e9)
    return gflop / speed_gflops


def training_speed_gflops(hardware: HardwareInfo, dim: int = 2) -> float:
    """The conv-training speed the planner assumes for a ``dim``-D network (GFLOP/s): measured fp32 matmul rate ×
    ``CONV_EFFICIENCY``; for 2D with a measured ``step_factor_2d`` (CPU profiles) divided by it and by
    ``TRAINER_OVERHEAD`` (the factor is of the plans' precision, so bf16 is in it); otherwise × the training
    speed-up of bf16 where the plans train in bf16 (√ of the measured matmul speed-up, else ``BF16_SPEEDUP``)."""
    rate = hardware.gflops * CONV_EFFICIENCY
    if dim == 2 and hardware.step_factor_2d is not None:
        return rate / (hardware.step_factor_2d * TRAINER_OVERHEAD)
    if not hardware.bf16:
        return rate
    return rate * (BF16_SPEEDUP if hardware.bf16_speedup is None else max(1.0, hardware.bf16_speedup) ** 0.5)
