"""Benchmark: training throughput (samples/s) and peak memory of the default 2D and 3D plans, fp32 vs bf16.

    python benchmarks/training_throughput.py --root /tmp/uadnet_bench [--steps 20] [--repeats 3] [--write]

Plans come from the demo dataset (2 mm brains) planned on this machine. One measurement = ``steps`` training
steps of the real restorer (forward, L1 loss, backward, gradient clipping, AdamW, EMA update) on a batch of the
planned size after 3 warm-up steps, in a fresh process (so its peak resident memory belongs to that
configuration alone); ``repeats`` measurements, median reported. The data pipeline runs in separate workers
during training and is not included (see the corruption-throughput section for its cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, demo_plans, median_of_runs, peak_rss_mb, write_section


def measure(plans_file: str, configuration: str, precision: str, steps: int) -> dict:
    import time

    import torch

    from uadnet.methods import build_method
    from uadnet.plans import Plans
    from uadnet.training.ema import EMA
    from uadnet.utilities.torch_utils import autocast

    plans = Plans.load(plans_file)
    cfg = plans.configuration(configuration)
    method = build_method("cold_ensemble", plans, configuration)
    model = method.network()
    ema, opt = EMA(model, 0.999), torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (cfg.batch_size, len(plans.channel_names), *cfg.patch_size)
    batch = {"data": torch.rand(shape), "target": torch.rand(shape), "severity": torch.rand(cfg.batch_size),
             "anomaly_mask": (torch.rand(cfg.batch_size, 1, *cfg.patch_size) > 0.9).float()}
    device = torch.device("cpu")

    def step() -> None:
        with autocast(device, precision):
            loss = method.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    return {"seconds_per_step": seconds, "samples_per_second": cfg.batch_size / seconds, "peak_mb": peak_rss_mb(),
            "batch": cfg.batch_size, "patch": cfg.patch_size, "params_m": sum(p.numel() for p in model.parameters())
            / 1e6, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    p.add_argument("--measure", nargs=3, metavar=("PLANS", "CONFIG", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.steps)))
        return
    if args.root is None:
        p.error("--root is required")
    plans, folder = demo_plans(args.root)
    rows = []
    for cfg in sorted(plans.configurations):
        results = {}
        for precision in ("fp32", "bf16"):
            results[precision], info = median_of_runs(
                [sys.executable, __file__, "--measure", str(folder / "uadnet_plans.json"), cfg, precision, "--steps",
                 str(args.steps)], args.repeats, ("seconds_per_step", "samples_per_second", "peak_mb"))
            print(cfg, precision, results[precision], flush=True)
        rows.append(f"| {cfg} | {info['patch']} × {info['batch']} | {info['params_m']:.2f} M | "
                    f"{results['fp32']['samples_per_second']:.1f} ({results['fp32']['seconds_per_step']:.3f} s) | "
                    f"{results['bf16']['samples_per_second']:.1f} ({results['bf16']['seconds_per_step']:.3f} s) | "
                    f"{results['bf16']['samples_per_second'] / results['fp32']['samples_per_second']:.2f}× | "
                    f"{results['fp32']['peak_mb']:.0f} / {results['bf16']['peak_mb']:.0f} |")
    text = "\n".join([
        "## Training throughput of the default plans",
        "",
        (f"Demo plans (2 mm brains) on {platform.machine()} CPU {cpu_label()}, {info['threads']} threads, one "
         "training step = forward + L1 + backward + clip + AdamW + EMA of the real restorer; median of "
         f"{args.repeats} fresh processes × {args.steps} steps. Peak = resident memory of the whole process "
         "(Python, torch, model, optimiser, activations)."),
        "",
        ("| config | patch × batch | parameters | fp32 samples/s (s/step) | bf16 samples/s (s/step) | bf16 speed-up "
         "| peak MB fp32 / bf16 |"),
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        (f"Reproduce: `python benchmarks/training_throughput.py --root ROOT --steps {args.steps} --repeats "
         f"{args.repeats} --write`"),
    ])
    print(text)
    if args.write:
        write_section("training_throughput", text)


if __name__ == "__main__":
    main()
