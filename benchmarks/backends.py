"""Benchmark: the restorer's backends (``uadnet_predict --backend``) on a folder — speed, agreement, AP.

    python benchmarks/backends.py --root ROOT --dataset 991 --plans uadnet_plans [--write]

``ROOT`` holds a trained model (``UADNET_RAW``, ``UADNET_PREPROCESSED``, ``UADNET_RESULTS`` under it) and the
dataset's ``imagesTs``/``labelsTs`` (a development dataset: AP is compared here, so not the demo's report set).
Predicts the folder with fold 0 as torch fp32 and bf16, onnxruntime fp32 and openvino fp32 and bf16 (the export
made and checked first, not timed; a backend that is not installed is skipped), in this one process, and reports the median scoring seconds per case (the network part, from
``per_case/*.json``), the largest |map − torch fp32 map| over all voxels, and the pooled AP of ``uadnet_evaluate``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, trained_iterations, use_root, write_section

VARIANTS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
            ("openvino", "bf16"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", default="991")
    p.add_argument("--plans", default="uadnet_plans")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    use_root(args.root)
    from uadnet import paths
    from uadnet.evaluation.evaluator import evaluate_folder
    from uadnet.imageio.reader_writer_registry import reader_writer_for
    from uadnet.inference.backends import backend_available
    from uadnet.inference.predictor import PredictionSettings, Predictor

    name = paths.resolve_dataset_name(args.dataset)
    raw = paths.raw_folder() / name
    rows, maps = [], {}
    for backend, precision in VARIANTS:
        if not backend_available(backend):
            print(f"{backend} is not installed: skipped")
            continue
        out = args.root / "backend_benchmark" / f"{backend}_{precision}"
        shutil.rmtree(out, ignore_errors=True)
        pred = Predictor(PredictionSettings(raw / "imagesTs", out, args.dataset, plans_name=args.plans, folds=["0"],
                                            precision=precision, backend=backend, progress_bar=False))
        assert pred.predict_folder() == 0
        records = [json.loads(f.read_text()) for f in sorted((out / "per_case").glob("*.json"))]
        reader = reader_writer_for(pred.output_ending)
        maps[(backend, precision)] = {r["case"]: reader.read_images([out / f"{r['case']}{pred.output_ending}"])[0]
                                      for r in records}
        summary = evaluate_folder(out, raw / "labelsTs", num_bootstrap=0, disable_progress_bar=True, verbose=False)
        iterations = trained_iterations(pred.folds[0].folder)
        rows.append((backend, precision, statistics.median(r["seconds"]["scoring"] for r in records),
                     summary["pooled"]["ap"], len(records)))
    ref = maps[("torch", "fp32")]
    cpu = cpu_label()
    lines = ["## Restorer backends (`benchmarks/backends.py`)", "",
             (f"{name} test folder ({rows[0][4]} cases), fold 0 of plans `{args.plans}` (trained {iterations} "
             f"iterations), {platform.machine()} CPU "
             f"{cpu}, 2 threads, one process. *Scoring*: median seconds per case of the network part (sliding "
             "window with the K = 4 ensemble, postprocessing). *Max |Δ map|*: over all voxels of all cases, against "
             "torch fp32. Pooled AP from `uadnet_evaluate` on the development test set."), "",
             ("| backend | precision | scoring s / case | speed-up vs torch fp32 | voxels differing by > 1e-4 | "
             "max abs map difference | pooled AP |"),
             "|---|---|---|---|---|---|---|"]
    total = sum(m.size for m in ref.values())
    for backend, precision, seconds, ap, _ in rows:
        diffs = [np.abs(maps[(backend, precision)][c] - ref[c]) for c in ref]
        differing = sum(int((d > 1e-4).sum()) for d in diffs)
        lines.append(f"| {backend} | {precision} | {seconds:.2f} | {rows[0][2] / seconds:.2f}x | {differing} of "
                     f"{total} | {max(float(d.max()) for d in diffs):.2g} | {ap:.4f} |")
    lines += ["", (f"Reproduce: `python benchmarks/backends.py --root ROOT --dataset {args.dataset} --plans "
              f"{args.plans} --write`")]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("backends", text)


if __name__ == "__main__":
    main()
