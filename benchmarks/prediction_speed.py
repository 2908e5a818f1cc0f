"""Benchmark: seconds and peak memory to predict one 1 mm brain volume (MNI152 size) with K = 4 severities.

    python benchmarks/prediction_speed.py --root /tmp/uadnet_bench_1mm [--repeats 3] [--write]

Builds a small demo dataset at the template's native 1 mm (197 × 233 × 189 voxels), plans it on this machine and
times, in a fresh process per measurement, the whole per-case path of ``uadnet_predict`` for one fold: read →
preprocess → Gaussian sliding window over every slice with the ensemble scorer (K restorations per tile) →
inverse preprocessing → write map and mask. The network has random weights (speed does not depend on them).
fp32 and bf16; and the ensemble in one batched forward pass (K·b tiles) against K sequential passes (b tiles
each, one severity at a time), at the plans' sliding-window step. ``--step_sizes``: further steps (fractions of the
patch, what ``uadnet_predict --step_size`` sets), timed batched. Medians of ``repeats``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, demo_plans, median_of_runs, peak_rss_mb, write_section

DATASET_ID = 991


class SequentialEnsemble:
    """The ensemble score with one forward pass per severity (the reference implementations' loop)."""

    def __init__(self, model, severities, precision):
        self.model, self.severities, self.precision = model, severities, precision

    def __call__(self, x):
        import torch

        from uadnet.utilities.torch_utils import autocast

        score, restored = torch.zeros_like(x[:, :1]), torch.zeros_like(x)
        for a in self.severities:
            with autocast(x.device, self.precision):
                r = self.model(x, torch.full((x.shape[0],), a)).float()
            score += (x - r).abs().mean(1, keepdim=True)
            restored += r
        k = len(self.severities)
        return torch.cat([score / k, restored / k], dim=1)


def measure(root: str, precision: str, batched: bool, step_size: float | None = None) -> dict:
    import tempfile
    import time

    import numpy as np
    import torch

    from uadnet.imageio import reader_writer_for
    from uadnet.methods import build_method
    from uadnet.methods.cold_ensemble import ColdEnsembleScorer
    from uadnet.plans import PLANS_FILE, Plans
    from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing
    from uadnet.scoring.scorers import score_volume

    name = f"Dataset{DATASET_ID:03d}_DemoBrain"
    plans = Plans.load(Path(root) / "preprocessed" / name / PLANS_FILE)
    cfg_name = plans.default_configuration
    cfg = plans.configuration(cfg_name)
    model = build_method("cold_ensemble", plans, cfg_name).network().eval()
    severities = plans.methods.cold_ensemble.severities
    scorer = (ColdEnsembleScorer(model, severities, precision) if batched
              else SequentialEnsemble(model, severities, precision))
    first = min((Path(root) / "raw" / name / "imagesTs").glob("*_0000.nii.gz"))
    channels = [first.with_name(first.name.replace("_0000", f"_{c:04d}")) for c in range(len(plans.channel_names))]
    reader = reader_writer_for(".nii.gz")
    t0 = time.perf_counter()
    image, props = reader.read_images(channels)
    pre = preprocess_case(image, props, plans, cfg_name)
    t1 = time.perf_counter()
    step = cfg.inference.step_size if step_size is None else step_size
    score, _ = score_volume(scorer, pre.data, cfg.patch_size, step,
                            cfg.inference.gaussian_sigma_scale, cfg.inference.batch_size, "cpu",
                            foreground=pre.foreground)
    t2 = time.perf_counter()
    amap = revert_preprocessing(score, pre.properties, plans, order=1)
    with tempfile.TemporaryDirectory() as tmp:
        reader.write(amap, Path(tmp) / "map.nii.gz", props)
        reader.write((amap > np.quantile(amap, 0.99)).astype(np.uint8), Path(tmp) / "mask.nii.gz", props)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "read_preprocess": t1 - t0, "scoring": t2 - t1, "export": t3 - t2,
            "peak_mb": peak_rss_mb(), "shape": list(image.shape[1:]), "preprocessed": list(pre.data.shape[1:]),
            "patch": cfg.patch_size, "config": cfg_name, "k": len(severities), "batch": cfg.inference.batch_size, "step_size": step,
            "features": cfg.network.features_per_stage,
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    p.add_argument("--step_sizes", type=float, nargs="*", default=[],
                   help="further sliding-window steps (fractions of the patch) to time, K-batched")
    p.add_argument("--no_sequential", action="store_true", help="skip the K-sequential comparison")
    p.add_argument("--measure", nargs=3, metavar=("PRECISION", "MODE", "STEP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        step = None if args.measure[2] == "plans" else float(args.measure[2])
        print(json.dumps(measure(str(args.root), args.measure[0], args.measure[1] == "batched", step)))
        return
    if args.root is None:
        p.error("--root is required")
    demo_plans(args.root, resolution=1.0, n_train=4, dataset_id=DATASET_ID)
    results, keys = {}, ("total", "read_preprocess", "scoring", "export", "peak_mb")
    modes = ("batched",) if args.no_sequential else ("batched", "sequential")
    runs = [(precision, mode, "plans") for precision in ("fp32", "bf16") for mode in modes]
    runs += [(precision, "batched", str(step)) for step in args.step_sizes for precision in ("fp32", "bf16")]
    for precision, mode, step in runs:
        results[precision, mode, step], info = median_of_runs(
            [sys.executable, __file__, "--root", str(args.root), "--measure", precision, mode, step], args.repeats, keys)
        print(precision, mode, step, results[precision, mode, step], flush=True)
        if step == "plans":
            plans_step = info["step_size"]
    rows = []
    for precision, mode, step in runs:
        if mode == "sequential":
            continue
        b, s = results[precision, mode, step], results.get((precision, "sequential", step))
        rows.append(f"| {precision} | {plans_step if step == 'plans' else float(step):g} | {b['total']:.1f} s "
                    f"(read+preprocess {b['read_preprocess']:.1f}, scoring {b['scoring']:.1f}, export "
                    f"{b['export']:.1f}) | " + (f"{s['total']:.1f} s | {s['scoring'] / b['scoring']:.2f}× | "
                                                f"{b['peak_mb']:.0f} / {s['peak_mb']:.0f} |" if s else
                                                f"– | – | {b['peak_mb']:.0f} / – |"))
    text = "\n".join([
        "## Prediction of one 1 mm brain volume",
        "",
        (f"One demo test volume at 1 mm ({info['shape']} voxels, {info['preprocessed']} after crop), plans made "
         f"on this machine for it (configuration {info['config']}, patch {info['patch']}, "
         f"{len(info['features'])} stages {info['features']}, random weights: speed does not depend on them, "
         f"{info['batch']} tiles per forward, K = {info['k']} severities), one fold, {platform.machine()} CPU "
         f"{cpu_label()}, {info['threads']} threads; whole per-case path incl. reading and writing. Median of "
         f"{args.repeats} fresh processes. Step {plans_step:g}: the plans' `inference.step_size`"
         + ("; other steps: what `uadnet_predict --step_size` uses, or a fold whose plans set "
            "`coarse_step_size` and whose validation found it no worse (off by default)." if args.step_sizes
            else ".")),
        "",
        ("| precision | step | K-batched (one forward of K·b tiles) | K-sequential | sequential / batched (scoring) "
         "| peak MB batched / sequential |"),
        "|---|---|---|---|---|---|",
        *rows,
        "",
        (f"Reproduce: `python benchmarks/prediction_speed.py --root ROOT --repeats {args.repeats}"
         + (f" --step_sizes {' '.join(f'{v:g}' for v in args.step_sizes)}" if args.step_sizes else "")
         + (" --no_sequential" if args.no_sequential else "") + " --write`"),
    ])
    print(text)
    if args.write:
        write_section("prediction_speed", text)


if __name__ == "__main__":
    main()
