"""What the machine can do, measured once and handed to the (pure) planner."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HardwareInfo:
    """``device``: cpu/cuda/mps; ``bf16``: fast bfloat16 matmuls; ``gflops``: measured fp32 matmul throughput."""

    device: str = "cpu"
    bf16: bool = False
    num_cpus: int = 2
    memory_gb: float = 8.0
    gflops: float = 50.0

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _measure_gflops(device: str, seconds: float = 0.3) -> float:
    import torch

    n = 512
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def detect_hardware(device: str | None = None, measure: bool = True) -> HardwareInfo:
    """Detect the device (``cuda`` if available unless ``device`` is given), bf16 support, cores and memory."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but this PyTorch sees no CUDA GPU "
                           f"(torch {torch.__version__}). Use --device cpu or install a CUDA build of PyTorch.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("--device mps was asked for, but MPS is not available here. Use --device cpu.")
    if device == "cuda":
        bf16 = bool(torch.cuda.is_bf16_supported())
        memory = torch.cuda.get_device_properties(0).total_memory / 1024 ** 3
    else:
        flags = _cpu_flags()
        bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
        except (ValueError, OSError, AttributeError):
            memory = 8.0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gflops = _measure_gflops(device) if measure else HardwareInfo.gflops
    return HardwareInfo(device=device, bf16=bf16, num_cpus=cpus, memory_gb=round(memory, 1), gflops=round(gflops, 1))
