"""Benchmark: the planner's seconds per training iteration against ``uadnet_train`` measured on this machine.

    python benchmarks/planner_estimate.py --root ROOT --dataset 991 --plans uadnet_plans [--write]

``ROOT`` holds a planned and preprocessed dataset (``UADNET_RAW``/``PREPROCESSED`` under it). For every row the
machine's hardware is measured as ``uadnet_plan_and_preprocess`` measures it (fp32 matmul GFLOP/s, bf16 speed-up,
the reference 2D training step), in a fresh process with that row's environment and precision; the planner's
estimate for the plans' 2d configuration (its patch, network and batch) follows from it. Measured: ``uadnet_train``
of fold 0 for ``--short`` and ``--long`` iterations without validation or calibration, in fresh processes, one
after the other; seconds per iteration = the difference of the wall times over the difference of the iterations
(start-up, data loading warm-up and the final checkpoint cancel out). "fp32, AVX2 code path" runs the same fp32
training with ``ATEN_CPU_CAPABILITY=avx2`` and ``ONEDNN_MAX_CPU_ISA=AVX2`` (PyTorch's and oneDNN's AVX2 kernels:
what an AVX2-only CPU of the same cores runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, use_root, write_section

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def measured_hardware(precision: str, env: dict[str, str]) -> dict:
    """The hardware profile as the planner would measure it in a fresh process with ``env`` (bf16 only where
    ``precision`` is bf16)."""
    code = ("import json; from dataclasses import replace; from uadnet.planning import hardware as hw, reference_step "
            "as rs; h = hw.detect_hardware('cpu', measure=False); g = hw.measure_gflops('cpu'); "
            f"bf16 = h.bf16 and {precision == 'bf16'}; "
            "h = replace(h, bf16=bf16, gflops=g, bf16_speedup=hw.measure_bf16_speedup('cpu') if bf16 else None, "
            "step_factor_2d=rs.measure_step_factor_2d(g, 'bf16' if bf16 else 'fp32')); print(json.dumps(h.to_dict()))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


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

    from uadnet import paths
    from uadnet.planning.cost_model import estimate_seconds_per_sample, training_speed_gflops
    from uadnet.planning.hardware import HardwareInfo, detect_hardware
    from uadnet.plans import Plans

    name = paths.resolve_dataset_name(args.dataset)
    plans = Plans.load(paths.preprocessed_folder() / name / f"{args.plans}.json")
    cfg = plans.configuration("2d")
    net = cfg.network

    def estimated_seconds(hardware) -> float:
        return estimate_seconds_per_sample(cfg.patch_size, net.strides, net.kernel_sizes, net.features_per_stage,
                                           net.n_conv_per_stage, training_speed_gflops(hardware, 2)) * cfg.batch_size

    runs = [("fp32", "fp32", {}), ("fp32, AVX2 code path", "fp32", AVX2)]
    if detect_hardware("cpu", measure=False).bf16:
        runs.append(("bf16", "bf16", {}))
    rows = []
    for label, precision, env in runs:
        hardware = HardwareInfo.from_dict(measured_hardware(precision, env))
        estimate = estimated_seconds(hardware)
        short = train_seconds(args.dataset, args.plans, args.short, precision, env)
        long = train_seconds(args.dataset, args.plans, args.long, precision, env)
        measured = (long - short) / (args.long - args.short)
        rows.append((label, hardware, measured, estimate))
        print(f"{label}: measured {measured:.3f} s/iteration, estimated {estimate:.3f} ({hardware})", flush=True)
    lines = ["## The planner's seconds per iteration (`benchmarks/planner_estimate.py`)", "",
             (f"{name}, plans `{args.plans}` 2d (patch {cfg.patch_size}, batch {cfg.batch_size}, features "
              f"{net.features_per_stage}), x86_64 CPU {cpu_label()}, {os.cpu_count()} cores, "
              f"{cfg.training.num_workers} data worker(s). Hardware as the planner measures it, per row in that "
              "row's environment (fp32 matmul GFLOP/s; `step_factor_2d`: the reference 2D training step in the "
              "row's precision over the cost model's estimate of it). Measured: `uadnet_train` for "
              f"{args.short} and {args.long} iterations without validation, (difference of wall times) / "
              f"{args.long - args.short}."),
             "", ("| training | GFLOP/s | step_factor_2d | measured s / iteration | planner's estimate | "
                  "estimate / measured |"), "|---|---|---|---|---|---|"]
    lines += [f"| {label} | {h.gflops:g} | {h.step_factor_2d} | {m:.3f} | {e:.3f} | {e / m:.2f} |"
              for label, h, m, e in rows]
    lines += ["", (f"Reproduce: `python benchmarks/planner_estimate.py --root ROOT --dataset {args.dataset} --plans "
                   f"{args.plans} --write`")]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("planner_estimate", text)


if __name__ == "__main__":
    main()
