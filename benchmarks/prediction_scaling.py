"""Benchmark: is the cost of scoring a volume linear in its voxels and in the ensemble size K?

    python benchmarks/prediction_scaling.py --plans PLANS_JSON [--repeats 3] [--write]

``PLANS_JSON``: a dataset's ``uadnet_plans.json`` (e.g. the demo's, 2 mm brains). Its 2d configuration's network
(random weights: speed does not depend on them), patch and sliding-window settings score random volumes the size of
one MNI152 brain's foreground crop at 2, 1.5 and 1 mm ((76, 75, 57), (101, 99, 76), (152, 149, 114) voxels) with
the ``cold_ensemble`` scorer at K = 1, 2, 4, 8 severities, fp32, in this process; the time of
:func:`uadnet.scoring.scorers.score_volume` (the network part of prediction), median of ``repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, write_section

SHAPES = {"2 mm": (76, 75, 57), "1.5 mm": (101, 99, 76), "1 mm": (152, 149, 114)}
KS = (1, 2, 4, 8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    import torch

    from uadnet.methods import build_method
    from uadnet.methods.cold_ensemble import ColdEnsembleScorer
    from uadnet.plans import Plans
    from uadnet.scoring.scorers import score_volume
    from uadnet.scoring.sliding_window import tile_starts

    plans = Plans.load(args.plans)
    cfg = plans.configuration("2d")
    model = build_method("cold_ensemble", plans, "2d").network().eval().requires_grad_(False)
    channels = len(plans.channel_names)
    inf = cfg.inference
    rows = []
    for label, shape in SHAPES.items():
        volume = np.random.default_rng(0).random((channels, *shape), dtype=np.float32)
        padded = [max(s, q) for s, q in zip(shape[1:], cfg.patch_size)]  # the window pads smaller slices
        tiles = shape[0] * int(np.prod([len(s) for s in tile_starts(padded, cfg.patch_size, inf.step_size)]))
        for k in KS:
            scorer = ColdEnsembleScorer(model, list(np.linspace(0.2, 0.8, k)) if k > 1 else [0.5], "fp32")
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with torch.no_grad():
                    score_volume(scorer, volume, cfg.patch_size, inf.step_size, inf.gaussian_sigma_scale,
                                 inf.batch_size, torch.device("cpu"))
                times.append(time.perf_counter() - t0)
            rows.append((label, int(np.prod(shape)), tiles, k, statistics.median(times)))
            print(rows[-1], flush=True)
    base = rows[0]
    lines = ["## Scoring cost against voxels and K (`benchmarks/prediction_scaling.py`)", "",
             (f"2d network, patch {cfg.patch_size} and sliding window (step {inf.step_size}, {inf.batch_size} tiles "
              f"per forward) of `{args.plans.name}`, random weights and random volumes the size of an MNI152 brain "
              f"crop at each spacing, `cold_ensemble` scorer, fp32, x86_64 CPU {cpu_label()}, "
              f"{torch.get_num_threads()} threads; median of {args.repeats}. *Relative*: seconds / (voxels × K), and "
              "seconds / (tiles × K), each divided by the 2 mm, K = 1 value (1 = linear)."), "",
             "| spacing | voxels | tiles | K | seconds | relative to voxels × K | relative to tiles × K |",
             "|---|---|---|---|---|---|---|"]
    for label, voxels, tiles, k, seconds in rows:
        per_voxel = seconds / (voxels * k) / (base[4] / (base[1] * base[3]))
        per_tile = seconds / (tiles * k) / (base[4] / (base[2] * base[3]))
        lines.append(f"| {label} | {voxels} | {tiles} | {k} | {seconds:.2f} | {per_voxel:.2f} | {per_tile:.2f} |")
    lines += ["", (f"Reproduce: `python benchmarks/prediction_scaling.py --plans PLANS_JSON --repeats {args.repeats} "
                  "--write` (PLANS_JSON: the demo's `uadnet_plans.json`)")]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("prediction_scaling", text)


if __name__ == "__main__":
    main()
