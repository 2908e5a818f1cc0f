"""The measured training step the planner's 2D estimate is calibrated on (CPU only).

The cost model (:mod:`uadnet.planning.cost_model`) turns the machine's fp32 matmul rate into seconds per training
sample with constants fitted on one CPU. How fast a CPU runs *convolutions*, GroupNorm and the other memory-bound
layers of a small UNet relative to its matmuls differs between CPUs and instruction sets (on the same 2 cores
oneDNN's AVX2 kernels train the CPU 2D network 26 % slower than its AVX-512 ones while the matmul rate is the
same), and bf16 autocast speeds training up by less than its matmuls. So the hardware measurement also times a
few training steps of a *reference* network of the planner's CPU 2D family, in the precision the plans train in,
and stores the ratio of that time to the cost model's estimate; the planner scales its 2D estimates by it.
"""

from __future__ import annotations

import math
import time

REFERENCE_2D = {"features": [16, 16, 32, 64, 64], "patch": [80, 80], "batch": 8}
REFERENCE_STEPS = 7  # timed steps after REFERENCE_WARMUP; the fastest counts (a busy machine still gives one)
REFERENCE_WARMUP = 2
FACTOR_GRID = 2 ** 0.125  # the ratio is rounded to the nearest power of this (≈ 9 % steps): reproducible plans


def factor_on_grid(ratio: float) -> float:
    """``ratio`` rounded to the nearest power of ``FACTOR_GRID`` (3 significant digits)."""
    if not ratio > 0:
        raise ValueError(f"a step-time ratio must be positive, got {ratio}")
    return float(f"{FACTOR_GRID ** round(math.log(ratio, FACTOR_GRID)):.3g}")


def reference_network_plan():
    """The reference network's :class:`uadnet.plans.NetworkPlan` (2D, 3×3 kernels, stride 2 per deeper stage)."""
    from uadnet.plans import NetworkPlan

    n = len(REFERENCE_2D["features"])
    return NetworkPlan(dim=2, features_per_stage=list(REFERENCE_2D["features"]), kernel_sizes=[[3, 3]] * n,
                       strides=[[1, 1]] + [[2, 2]] * (n - 1))


def reference_seconds(precision: str, steps: int = REFERENCE_STEPS) -> float:
    """Fastest of ``steps`` timed training steps (forward, MSE, backward, AdamW) of the reference 2D network on
    the CPU, with torch's threads, in ``precision`` (fp32 or bf16 autocast)."""
    import torch

    from uadnet.networks.unet import ConditionalUNet
    from uadnet.utilities.torch_utils import autocast

    patch, batch = REFERENCE_2D["patch"], REFERENCE_2D["batch"]
    plan = reference_network_plan()
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(0)
        net = ConditionalUNet(1, 1, plan, residual=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, *patch, generator=generator)
    severity = torch.rand(batch, generator=generator)
    device = torch.device("cpu")

    def step() -> float:
        start = time.perf_counter()
        with autocast(device, precision):
            loss = torch.nn.functional.mse_loss(net(x, severity).float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for _ in range(REFERENCE_WARMUP):
        step()
    return min(step() for _ in range(steps))


def reference_estimate_seconds(gflops: float) -> float:
    """The cost model's seconds for one reference step at fp32 matmul rate ``gflops`` (no factor applied)."""
    from uadnet.planning.cost_model import CONV_EFFICIENCY, estimate_seconds_per_sample

    plan = reference_network_plan()
    return REFERENCE_2D["batch"] * estimate_seconds_per_sample(REFERENCE_2D["patch"], plan.strides, plan.kernel_sizes,
                                                              plan.features_per_stage, plan.n_conv_per_stage,
                                                              gflops * CONV_EFFICIENCY)


def measure_step_factor_2d(gflops: float, precision: str) -> float:
    """Measured reference step / the cost model's estimate of it at ``gflops``, on the ``FACTOR_GRID``."""
    return factor_on_grid(reference_seconds(precision) / reference_estimate_seconds(gflops))
