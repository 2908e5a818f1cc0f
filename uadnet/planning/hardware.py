"""What the machine can do, measured once and handed to the (pure) planner.

Plans depend on the measured speed (patch, batch and iteration count under a time budget), so the measurement
must not depend on what else the machine is doing. Three guards:

* the speed is the *best* of several short one-thread timed bursts (times the threads torch uses): a busy machine
  still gives a single thread some bursts at full speed, where threads that compete with another process's threads
  run several-fold slower; it is rounded down to a geometric grid of ``GFLOPS_GRID`` steps;
* the result is stored as a **hardware profile** (JSON) and reused: ``UADNET_PREPROCESSED/hardware_profile.json``
  by default, keyed by the machine's identity (CPU model, cores, device, torch version), so planning the same
  dataset twice on one machine gives identical plans; ``--hardware_profile FILE`` reuses a given profile (e.g.
  one measured on an idle machine, or the target machine's);
* a measurement taken while the machine looks busy (other processes' CPU time from ``/proc/stat``, or bursts far
  apart) prints a warning.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uadnet.utilities.file_io import load_json, save_json

PROFILE_FILE = "hardware_profile.json"
GFLOPS_GRID = 2 ** 0.25  # measured speeds are rounded down to powers of this (≈ 19 % steps)
GRID_TOLERANCE = 0.05  # in grid steps (≈ 0.9 %): covers the 3-digit rounding of grid values
BURSTS = 25  # timed bursts; the best counts
BURST_SECONDS = 0.02
BUSY_SPREAD = 0.6  # median burst slower than this fraction of the best: the machine was busy
BUSY_LOAD_PER_CPU = 0.5  # without /proc/stat: 1-minute load average per CPU above this means busy
BUSY_OTHERS_FRACTION = 0.2  # other processes used more than this fraction of all cores while measuring: busy


class HardwareProfileError(ValueError):
    """A hardware profile file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class HardwareInfo:
    """``device``: cpu/cuda/mps; ``bf16``: fast bfloat16 matmuls; ``gflops``: measured fp32 matmul throughput
    (GFLOP/s, best burst, on the ``GFLOPS_GRID``); ``memory_gb``: system (CPU) or device (GPU) memory;
    ``bf16_speedup``: measured bf16 / fp32 matmul rate (best bursts each, on the grid; None: not measured —
    profiles written before it existed, or no bf16 — and the planner assumes its constant);
    ``step_factor_2d``: the fastest training step of a reference 2D network, in the precision the plans train in
    (bf16 where ``bf16``), over the cost model's estimate of it (:mod:`uadnet.planning.reference_step`; CPU only;
    None: not measured — a GPU, or a profile written before it existed — and the 2D estimate uses the constants
    alone)."""

    device: str = "cpu"
    bf16: bool = False
    num_cpus: int = 2
    memory_gb: float = 8.0
    gflops: float = 50.0
    bf16_speedup: float | None = None
    step_factor_2d: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "hardware profile") -> HardwareInfo:
        kinds = {"device": str, "bf16": bool, "num_cpus": int, "memory_gb": (int, float), "gflops": (int, float),
                 "bf16_speedup": (int, float, type(None)), "step_factor_2d": (int, float, type(None))}
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise HardwareProfileError(f"{where}: unknown key(s) {unknown}; known: {sorted(kinds)}")
        for key, value in d.items():
            if isinstance(value, bool) and kinds[key] is not bool or not isinstance(value, kinds[key]):
                raise HardwareProfileError(f"{where}: '{key}' has the wrong type ({value!r})")
        if d.get("device", "cpu") not in ("cpu", "cuda", "mps"):
            raise HardwareProfileError(f"{where}: device must be cpu, cuda or mps, got {d['device']!r}")
        if float(d.get("gflops", 1.0)) <= 0:
            raise HardwareProfileError(f"{where}: gflops must be positive, got {d['gflops']!r}")
        if d.get("bf16_speedup") is not None and not 0 < float(d["bf16_speedup"]) <= 64:
            raise HardwareProfileError(f"{where}: bf16_speedup must be in (0, 64] or null, got {d['bf16_speedup']!r}")
        if d.get("step_factor_2d") is not None and not 0 < float(d["step_factor_2d"]) <= 1000:
            raise HardwareProfileError(f"{where}: step_factor_2d must be in (0, 1000] or null, got "
                                       f"{d['step_factor_2d']!r}")
        return cls(**d)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _num_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_identity(device: str) -> dict[str, Any]:
    """What a stored profile must match to be reused: CPU model and flags that matter, cores, device, torch."""
    import torch

    flags = _cpu_flags()
    identity = {"device": device, "cpu_model": _cpu_model(), "num_cpus": _num_cpus(),
                "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"}),
                "torch": torch.__version__.split("+")[0], "torch_threads": torch.get_num_threads()}
    if device == "cuda" and torch.cuda.is_available():
        identity["gpu"] = torch.cuda.get_device_name(0)
    return identity


def on_grid(gflops: float) -> float:
    """``gflops`` rounded down to the nearest power of ``GFLOPS_GRID`` (3 significant digits). Idempotent: a value
    already on the grid (rounded to 3 digits, up to 0.5 % below the power) stays where it is."""
    if gflops <= 0:
        return 0.0
    k = math.floor(math.log(gflops, GFLOPS_GRID) + GRID_TOLERANCE)
    return float(f"{GFLOPS_GRID ** k:.3g}")


def best_of_bursts(burst: Callable[[], float], bursts: int = BURSTS) -> tuple[float, float]:
    """Run ``burst`` (returns one rate) ``bursts`` times; returns ``(best, median)``."""
    rates = [burst() for _ in range(bursts)]
    return max(rates), statistics.median(rates)


def _matmul_burst(device: str, seconds: float = BURST_SECONDS, dtype: str = "fp32") -> Callable[[], float]:
    """One timed burst of 512² matmuls in ``dtype`` (fp32 or bf16; GFLOP/s). On the CPU it runs on one thread: a
    single thread still gets whole time slices of a core while other processes run, where a multi-threaded burst
    would be slowed several-fold by thread oversubscription (measured: benchmarks/hardware_measurement.py)."""
    import torch

    n = 512
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=kind)
    b = torch.randn(n, n, device=device, dtype=kind)

    def run() -> float:
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
        return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9

    def burst() -> float:
        if device != "cpu":
            return run()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run()
        finally:
            torch.set_num_threads(threads)

    for _ in range(3):  # warm-up
        a @ b
    return burst


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine in clock ticks, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def others_cpu_fraction(measure: Callable[[], Any]) -> tuple[Any, float | None]:
    """Run ``measure()``; also return the fraction of all cores that *other* processes used meanwhile."""
    before, own_before, wall_before = _cpu_jiffies(), time.process_time(), time.perf_counter()
    result = measure()
    after, own, wall = _cpu_jiffies(), time.process_time() - own_before, time.perf_counter() - wall_before
    if before is None or after is None or wall <= 0:
        return result, None
    busy_s = (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")
    return result, max(0.0, busy_s - own) / (wall * _num_cpus())


def measure_gflops(device: str, warn: Callable[[str], None] | None = None) -> float:
    """fp32 matmul GFLOP/s of the whole device, on the grid. CPU: the best of ``BURSTS`` one-thread bursts times
    torch's thread count (at most the cores). Warns (``warn``, default stderr) when the machine looks busy."""
    import torch

    warn = warn or (lambda m: print(f"WARNING: {m}", file=sys.stderr))
    load = load_average()
    (best, median), others = others_cpu_fraction(lambda: best_of_bursts(_matmul_burst(device)))
    cpus = _num_cpus()
    busy = []
    if device == "cpu" and others is not None and others > BUSY_OTHERS_FRACTION:
        busy.append(f"other processes used {100 * others:.0f} % of the {cpus} CPU(s) meanwhile")
    elif device == "cpu" and others is None and load is not None and load > BUSY_LOAD_PER_CPU * cpus:
        busy.append(f"load average {load:.2f} on {cpus} CPU(s)")
    if median < BUSY_SPREAD * best:
        busy.append(f"timed bursts ranged from {median:.0f} (median) to {best:.0f} GFLOP/s (best)")
    if busy:
        warn("the machine looks busy while measuring its speed (" + "; ".join(busy) + "). The plans' patch, batch "
             "and iteration count depend on it; re-plan on an idle machine (--remeasure_hardware), or pass "
             "--hardware_profile with a profile measured on an idle machine.")
    if device == "cpu":
        best *= max(1, min(torch.get_num_threads(), cpus))
    return on_grid(best)


def measure_bf16_speedup(device: str) -> float:
    """bf16 / fp32 matmul rate on this device (best of ``BURSTS`` one-thread bursts each, rounded down to the
    ``GFLOPS_GRID``, at least 1): 2.0 on an AVX512-BF16 CPU without AMX, several-fold with AMX or on GPUs. The
    planner turns it into a training speed-up (:func:`uadnet.planning.cost_model.training_speed_gflops`)."""
    fp32, _ = best_of_bursts(_matmul_burst(device))
    bf16, _ = best_of_bursts(_matmul_burst(device, dtype="bf16"))
    return max(1.0, on_grid(bf16 / max(fp32, 1e-9)))


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
    gflops = measure_gflops(device) if measure else HardwareInfo.gflops
    speedup = measure_bf16_speedup(device) if measure and bf16 else None
    factor = None
    if measure and device == "cpu":
        from uadnet.planning.reference_step import measure_step_factor_2d

        factor = measure_step_factor_2d(gflops, "bf16" if bf16 else "fp32")
    return HardwareInfo(device=device, bf16=bf16, num_cpus=_num_cpus(), memory_gb=round(memory, 1), gflops=gflops,
                        bf16_speedup=speedup, step_factor_2d=factor)


def save_profile(hardware: HardwareInfo, path: str | os.PathLike, identity: dict[str, Any] | None = None) -> None:
    """Write ``{"hardware": ..., "machine": identity}`` (JSON, atomically)."""
    save_json({"hardware": hardware.to_dict(), "machine": identity or {}}, path)


def load_profile(path: str | os.PathLike) -> tuple[HardwareInfo, dict[str, Any]]:
    """``(hardware, machine identity)`` from a profile file (also accepts a bare ``HardwareInfo`` object)."""
    path = Path(path)
    if not path.is_file():
        raise HardwareProfileError(f"hardware profile {path}: no such file. Give a file written by "
                                   "uadnet_plan_and_preprocess (hardware_profile.json or planning_hardware.json).")
    try:
        data = load_json(path)
    except ValueError as e:
        raise HardwareProfileError(f"hardware profile {path}: not valid JSON ({e}); delete it to measure again") from e
    if not isinstance(data, dict):
        raise HardwareProfileError(f"hardware profile {path}: expected a JSON object")
    hw = data.get("hardware", data)
    if not isinstance(hw, dict):
        raise HardwareProfileError(f"hardware profile {path}: 'hardware' must be an object")
    return HardwareInfo.from_dict(hw, f"hardware profile {path}"), dict(data.get("machine") or {})


def resolve_hardware(device: str | None, profile: str | os.PathLike | None, cache_folder: Path | None,
                     remeasure: bool = False, say: Callable[[str], None] = print) -> HardwareInfo:
    """The hardware the planner plans for.

    ``profile`` given: that file, as is. Otherwise the machine's cached profile in ``cache_folder`` when it
    matches this machine (and ``remeasure`` is false), else a fresh measurement, which is then cached."""
    if profile is not None:
        hardware, _ = load_profile(profile)
        say(f"hardware from {profile}: {hardware.to_dict()}")
        return hardware
    import torch

    resolved = device or ("cuda" if torch.cuda.is_available() else "cpu")
    identity = machine_identity(resolved)
    cache = None if cache_folder is None else Path(cache_folder) / PROFILE_FILE
    if cache is not None and cache.is_file() and not remeasure:
        try:
            hardware, stored = load_profile(cache)
        except HardwareProfileError as e:
            say(f"WARNING: {e}; measuring again")
        else:
            if stored != identity:
                say(f"{cache} was measured on another machine or setup: measuring again")
            elif hardware.bf16 and hardware.bf16_speedup is None:
                say(f"{cache} predates the bf16 speed-up measurement: measuring again")
            elif hardware.device == "cpu" and hardware.step_factor_2d is None:
                say(f"{cache} predates the reference training-step measurement: measuring again")
            else:
                say(f"hardware profile of this machine reused from {cache} (--remeasure_hardware to measure "
                    f"again): {hardware.gflops:g} GFLOP/s fp32, bf16 {hardware.bf16}")
                return hardware
    hardware = detect_hardware(resolved)
    if cache is not None:
        save_profile(hardware, cache, identity)
    return hardware


def matching_step(values: Sequence[float]) -> bool:
    """True when all ``values`` lie within one ``GFLOPS_GRID`` step of each other (benchmarks, tests). Grid values
    carry 3 digits (181 and 152 are neighbours although 181 / 152 is a little above the step)."""
    return math.log(max(values) / min(values), GFLOPS_GRID) <= 1 + GRID_TOLERANCE
