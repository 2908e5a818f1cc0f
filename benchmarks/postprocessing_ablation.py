"""Benchmark: which postprocessing steps of a trained fold cost which lesion kinds (inference only).

    python benchmarks/postprocessing_ablation.py --root ROOT --dataset 991 --plans uadnet_plans_mse_rn99

``ROOT`` holds a trained model and its development dataset (``UADNET_RAW``/``PREPROCESSED``/``RESULTS`` under it,
e.g. a ``benchmarks/development.py`` root). Predicts the dataset's ``imagesTs`` with fold 0 four times — the
postprocessing the fold chose on validation, then without component removal, without it and the median filter,
and with the residual normalisation, foreground mask and intensity novelty only — and evaluates each with
``uadnet_evaluate --groups dataset.json`` (pooled AP, case AUROC, AP per lesion kind). The development test set,
not the demo's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, use_root

VARIANTS = {
    "as chosen on validation": {},
    "without component removal": {"min_component_mm3": None},
    "without component removal and median": {"min_component_mm3": None, "median_size_voxels": None},
    "residual normalisation, foreground and novelty only": {"min_component_mm3": None, "median_size_voxels": None,
                                                            "gaussian_sigma_mm": None, "multiscale_sigmas_mm": None,
                                                            "multiscale_divisors": None},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", default="991")
    p.add_argument("--plans", default="uadnet_plans")
    args = p.parse_args()
    use_root(args.root)
    from uadnet import paths
    from uadnet.cli.evaluate import main as evaluate
    from uadnet.inference.predictor import PredictionSettings, Predictor

    raw = paths.raw_folder() / paths.resolve_dataset_name(args.dataset)
    lines = [f"{raw.name}, fold 0 of `{args.plans}`, CPU {cpu_label()}", "",
             "| postprocessing | pooled AP | case AUROC | AP per kind |", "|---|---|---|---|"]
    for name, edit in VARIANTS.items():
        out = args.root / "postprocessing_ablation" / name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        pred = Predictor(PredictionSettings(raw / "imagesTs", out, args.dataset, plans_name=args.plans, folds=["0"],
                                            progress_bar=False))
        for fold in pred.folds:
            fold.postprocessing = replace(fold.postprocessing, **edit)
        assert pred.predict_folder() == 0
        assert evaluate(["-p", str(out), "-g", str(raw / "labelsTs"), "--groups", str(raw / "dataset.json"),
                         "--num_bootstrap", "0", "--disable_progress_bar"]) == 0
        s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        kinds = ", ".join(f"{g} {v['ap']:.4f}" for g, v in (s.get("groups") or {}).items() if v["ap"] is not None)
        lines.append(f"| {name} | {s['pooled']['ap']:.3f} | {s['case_level']['auroc']:.3f} | {kinds} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
