"""Benchmark: is the planner's hardware measurement reproducible, idle and under load?

    python benchmarks/hardware_measurement.py [--repeats 3] [--write]

Measures the fp32 matmul speed the planner uses (``uadnet.planning.hardware.measure_gflops``: best of several
bursts, rounded down to the ``GFLOPS_GRID``) in ``--repeats`` fresh processes on the idle machine, then again while
a second process keeps every core busy with its own torch work, and plans the 2 mm demo brain's fingerprint
(built from a stored synthetic fingerprint, no dataset needed) for each measurement. Reports the raw best / median
burst, the grid value and the 2d plan (patch, batch, iterations) per run. With ``--write`` the table goes to
``documentation/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_section

CHILD = r"""
import json, os
from uadnet.planning import hardware as hw
res = {}
warnings = []
(best, median), others = hw.others_cpu_fraction(lambda: hw.best_of_bursts(hw._matmul_burst("cpu")))
res.update(best=best, median=median, grid=hw.measure_gflops("cpu", warnings.append), others=others,
           warned=bool(warnings))
print(json.dumps(res))
"""


def _burn(seconds: float) -> None:
    import torch

    a = torch.randn(1024, 1024)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a @ a


def demo_fingerprint() -> dict:
    """A fingerprint shaped like the 2 mm demo brain's (40 cases, [78, 96, 80] voxels after crop)."""
    case = {"spacing": [2.0, 2.0, 2.0], "shape_after_crop": [78, 96, 80]}
    return {"dataset_name": "Dataset990_DemoBrain", "channel_names": {"0": "T1", "1": "FLAIR"},
            "file_ending": ".nii.gz", "median_shape_after_crop": [78, 96, 80], "median_spacing": [2.0, 2.0, 2.0],
            "is_2d": False, "cases": [case] * 40, "median_foreground_extent_mm": [156.0, 192.0, 160.0],
            "intensity_statistics": {"0": {"max": 1000.0}, "1": {"max": 1000.0}},
            "normalized_histograms": {c: {"percentile": [1] * 1024} for c in "01"}}


def plan_for(gflops: float, bf16: bool) -> str:
    from uadnet.planning.hardware import HardwareInfo
    from uadnet.planning.planner import plan_experiment

    cfg = plan_experiment(demo_fingerprint(), HardwareInfo("cpu", bf16, 2, 24.0, gflops)).configuration("2d")
    return f"{cfg.patch_size} × {cfg.batch_size}, {cfg.training.iterations} it"


def run(repeats: int, loaded: bool) -> list[dict]:
    out = []
    for _ in range(repeats):
        burner = None
        if loaded:
            burner = mp.get_context("spawn").Process(target=_burn, args=(30.0,))
            burner.start()
            time.sleep(3.0)
        try:
            r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
        finally:
            if burner is not None:
                burner.terminate()
                burner.join()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    from uadnet.planning.hardware import _cpu_flags, _cpu_model

    bf16 = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    rows = []
    for label, loaded in (("idle", False), ("loaded (a second torch process on all cores)", True)):
        for i, r in enumerate(run(args.repeats, loaded)):
            rows.append(f"| {label} | {i + 1} | {100 * (r['others'] or 0):.0f} % | {r['best']:.1f} | {r['median']:.1f} | "
                        f"{r['grid']:g} | {'yes' if r['warned'] else 'no'} | {plan_for(r['grid'], bf16)} |")
    flags = sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    text = "\n".join([
        "## Hardware measurement the plans depend on (`benchmarks/hardware_measurement.py`)",
        "",
        (f"CPU: {_cpu_model()} ({platform.machine()}, flags {', '.join(flags)}), 2 cores. Each row is a fresh "
        "process: one-thread bursts of 0.02 s of 512² fp32 matmuls (best / median burst shown per thread), then the "
        "planner's own measurement (`measure_gflops`: best of 25 such bursts × torch threads, rounded down to powers "
        "of 2^¼, with its busy warning); *loaded* rows run while a second process multiplies 1024² matrices on all "
        "cores. \"others\" = CPU share other processes used during the first measurement (/proc/stat). The last "
        "column is the 2d plan of the 2 mm demo brain for the planner's value (bf16 as detected)."),
        "",
        ("| machine | run | others | best burst GFLOP/s (1 thread) | median burst | planned GFLOP/s | busy warning | "
        "2d plan |"),
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        ("Planning also stores the profile (`UADNET_PREPROCESSED/hardware_profile.json`, keyed by CPU model, cores "
        "and torch version) and reuses it, so re-planning on one machine gives identical plans whatever its load; "
        "`--remeasure_hardware` measures again and `--hardware_profile FILE` plans for a given profile."),
        "",
        "Reproduce: `python benchmarks/hardware_measurement.py --write`",
    ])
    print(text)
    if args.write:
        write_section("hardware_measurement", text)


if __name__ == "__main__":
    main()
