"""Case-score reductions compared on the maps of development runs: case AUROC (abnormal against healthy test cases).

    python benchmarks/case_scores.py --root ROOT --dataset dev_brain --variants mse_vm0,base_3500_vm0 [--write]

Reads the prediction folders ``ROOT/predictions/<dataset>/<variant>`` written by ``benchmarks/development.py`` (the
anomaly maps on the input grid) and the development test set's ``dataset.json``; every reduction of
:data:`uadnet.scoring.calibration.CASE_SCORE_REDUCTIONS` is computed by :func:`uadnet.scoring.calibration.case_score`
over the foreground (nonzero input voxels) of each map, except those fitted on the healthy validation maps
(``top_fractions_over_median_vs_healthy``, which these folders do not hold: its figures come from development rows
run with it, ``benchmarks/development.py --set configuration.inference.case_score=...``). The predictor computes
the same reductions on the preprocessed grid, so the figures here are close to, not identical with, a run's
``scores.csv``. Case AUROC overall
and per lesion kind (that kind's cases against the healthy ones). ``--write`` puts the table into
documentation/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, write_section
from development import DATASETS


def _read(path: Path) -> np.ndarray:
    """The (c, z, y, x) array of one image file."""
    from uadnet.imageio import reader_writer_for

    ending = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return reader_writer_for(ending).read_images([path])[0]


def reduction_aurocs(root: Path, dataset: str, variant: str) -> dict[str, dict[str, float]]:
    """``{reduction: {"all": AUROC, <kind>: AUROC, "cases": n}}`` for one development run's prediction folder."""
    from uadnet.evaluation.evaluator import list_cases
    from uadnet.scoring.calibration import CASE_SCORE_REDUCTIONS, CaseScore, case_score
    from uadnet.utilities.file_io import load_json

    raw = root / "raw" / DATASETS[dataset][1]
    info = load_json(raw / "dataset.json")
    kinds, ending = info["test_case_lesions"], info["file_ending"]
    folder = root / "predictions" / dataset / variant
    images = {}
    for path in sorted((raw / "imagesTs").iterdir()):
        images.setdefault(path.name[: -len(ending)].rsplit("_", 1)[0], []).append(path)
    maps = list_cases(folder, skip_derived=True)
    fixed = [r for r in CASE_SCORE_REDUCTIONS if CaseScore(r).is_fitted]  # the others fit on healthy validation maps
    scores: dict[str, list[float]] = {r: [] for r in fixed}
    labels = []
    for case in sorted(kinds):
        amap = np.asarray(_read(maps[case])[0], np.float32)
        image = np.concatenate([_read(p) for p in images[case]])
        foreground = np.any(image != 0, axis=0).reshape(amap.shape)
        for r in fixed:
            scores[r].append(case_score(amap, foreground, reduction=r))
        labels.append(kinds[case])
    labels_arr = np.asarray(labels)
    out = {}
    for r, values in scores.items():
        v = np.asarray(values)
        row = {"all": float(roc_auc_score(labels_arr != "healthy", v))}
        for kind in sorted(set(labels) - {"healthy"}):
            keep = (labels_arr == kind) | (labels_arr == "healthy")
            row[kind] = float(roc_auc_score(labels_arr[keep] == kind, v[keep]))
        out[r] = {**row, "cases": len(labels)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), action="append", required=True)
    p.add_argument("--variants", action="append", required=True,
                   help="comma-separated prediction folders, one --variants per --dataset")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    from uadnet.scoring.calibration import MEAN_OF_TOP, TOP_OVER_MEDIAN

    if len(args.variants) != len(args.dataset):
        p.error("give one --variants per --dataset")
    intro = ("Case AUROC (abnormal against healthy development test cases) of each reduction, computed on the maps of "
             f"development runs (input grid; CPU of the runs: {cpu_label()}, bf16 training, fold 0, the iterations of the runs' rows in the development tables). Per kind: that kind's cases against the "
             "healthy ones.")
    lines = [intro, "", "| dataset | run | reduction | case AUROC | per kind |", "|---|---|---|---|---|"]
    gains = []
    for dataset, variants in zip(args.dataset, args.variants):
        for variant in variants.split(","):
            result = reduction_aurocs(args.root, dataset, variant)
            for reduction, row in result.items():
                kinds = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k not in ("all", "cases"))
                lines.append(f"| {dataset} ({row['cases']} cases) | {variant} | {reduction} | {row['all']:.3f} | {kinds} |")
                print(lines[-1], flush=True)
            gains.append(result[TOP_OVER_MEDIAN]["all"] - result[MEAN_OF_TOP]["all"])
    summary = (f"Over the {len(gains)} runs, {TOP_OVER_MEDIAN} minus {MEAN_OF_TOP}: mean {np.mean(gains):+.3f}; "
               f"{sum(g >= 5e-4 for g in gains)} higher, {sum(abs(g) < 5e-4 for g in gains)} equal (to 3 decimals), "
               f"{sum(g <= -5e-4 for g in gains)} lower.")
    lines += ["", summary]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("case_score", "## Case score\n\n" + text + "\n\nReproduce: `python benchmarks/case_scores.py "
                      "--root ROOT --dataset DATASET --variants RUN[,RUN...] [--dataset ... --variants ...] --write`")


if __name__ == "__main__":
    main()
