"""Benchmark: the planner's seconds per training iteration against ``uadnet_train`` measured on this machine.

    python benchmarks/planner_estimate.py --root ROOT --dataset 991 --plans uadnet_plans [--write]

``ROOT`` holds a planned and preprocessed dataset (``UADNET_RAW``/``PREPROCESSED`` under it). The machine's
hardware is measured as ``uadnet_plan_and_preprocess`` measures it (fp32 matmul GFLOP/s, bf16 speed-up); the
planner's estimate for the plans' 2d configuration (its patch, network and batch) is computed for fp32 and, where
the CPU has bf16, for bf16. Measured: ``uadnet_train`` of fold 0 for ``--short`` and ``--long`` iterations without
validation or calibration, in fresh processes, one after the other; seconds per iteration = the difference of the
wall times over the difference of the iterations (start-up, data loading warm-up and the final checkpoint cancel
out). "fp32, AVX2 code path" runs the same fp32 training with ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` (PyTorch's and oneDNN's AVX2 kernels: what an AVX2-only CPU of the same cores runs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, use_root, write_section

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def train_seconds(dataset: str, plans: str, iterations: int, precision: str, env: dict[str, str]) -> float:
    """Wall seconds of one ``uadnet_train`` run in a fresh process (results in a temporary folder)."""
    with tempfile.TemporaryDirectory() as results:
        command = [sys.executable, "-m", "uadnet.cli.train", dataset, "0", "-p", plans, "--iterations",
                   str(iterations), "--precision", precision, "--no_validation", "--no_calibration",
                   "--disable_progress_bar", "--checkpoint_every", str(10 * iterations)]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env, "UADNET_RESULTS": results})
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", default="991")
    p.add_argument("--plans", default="uadnet_plans")
    p.add_argument("--short", type=int, default=20)
    p.add_argument("--long", type=int, default=220)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    use_root(args.root)
    from dataclasses import replace

    from uadnet import paths
    from uadnet.planning.cost_model import estimate_seconds_per_sample, training_speed_gflops
    from uadnet.planning.hardware import detect_hardware
    from uadnet.plans import Plans

    name = paths.resolve_dataset_name(args.dataset)
    plans = Plans.load(paths.preprocessed_folder() / name / f"{args.plans}.json")
    cfg = plans.configuration("2d")
    net = cfg.network

    def estimated_seconds(hardware) -> float:
        return estimate_seconds_per_sample(cfg.patch_size, net.strides, net.kernel_sizes, net.features_per_stage,
                                           net.n_conv_per_stage, training_speed_gflops(hardware)) * cfg.batch_size

    hardware = detect_hardware("cpu")
    runs = [("fp32", "fp32", {}), ("fp32, AVX2 code path", "fp32", AVX2)]
    if hardware.bf16:
        runs.append(("bf16", "bf16", {}))
    rows = []
    for label, precision, env in runs:
        estimate = estimated_seconds(replace(hardware, bf16=precision == "bf16"))
        short = train_seconds(args.dataset, args.plans, args.short, precision, env)
        long = train_seconds(args.dataset, args.plans, args.long, precision, env)
        measured = (long - short) / (args.long - args.short)
        rows.append((label, measured, estimate))
        print(f"{label}: measured {measured:.3f} s/iteration, estimated {estimate:.3f}", flush=True)
    lines = ["## The planner's seconds per iteration (`benchmarks/planner_estimate.py`)", "",
             (f"{name}, plans `{args.plans}` 2d (patch {cfg.patch_size}, batch {cfg.batch_size}, features "
              f"{net.features_per_stage}), x86_64 CPU {cpu_label()}, {os.cpu_count()} cores, "
              f"{cfg.training.num_workers} data worker(s). Hardware as the planner measures it: {hardware.gflops:g} "
              f"GFLOP/s fp32, bf16 speed-up {hardware.bf16_speedup}. Measured: `uadnet_train` for {args.short} and "
              f"{args.long} iterations without validation, (difference of wall times) / {args.long - args.short}."),
             "", "| training | measured s / iteration | planner's estimate | estimate / measured |", "|---|---|---|---|"]
    lines += [f"| {label} | {m:.3f} | {e:.3f} | {e / m:.2f} |" for label, m, e in rows]
    lines += ["", (f"Reproduce: `python benchmarks/planner_estimate.py --root ROOT --dataset {args.dataset} --plans "
                   f"{args.plans} --write`")]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("planner_estimate", text)


if __name__ == "__main__":
    main()
