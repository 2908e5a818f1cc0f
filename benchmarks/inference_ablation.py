"""Inference-only ablations of a trained ``cold_ensemble`` fold: ensemble severities and case scores, on validation
and on the development test set side by side.

    python benchmarks/inference_ablation.py --root ROOT --dataset dev_brain [--plans uadnet_plans_small]

The ensemble map is the mean over the severities α_k of single-severity residual maps (the sliding window is
linear), so every single-α map is computed once per case and any severity set is a mean of them. Validation: the
fold's held-out healthy cases with the trainer's seeded validation anomalies (what the defaults may be chosen on);
development test: ``imagesTs``/``labelsTs`` of the development dataset (reported, to check that the validation
choice transfers). The fold's postprocessing is applied to every variant; AP is threshold-free. The fold's residual normalisation (fitted for the plans' severities only) is left out of
every variant, so all are compared on raw maps. Case scores are
compared by case-level AUROC: validation = the healthy vs the corrupted version of each validation case.
Writes ``ROOT/records/<dataset>__<plans>__inference.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import use_root
from development import DATASETS

ALPHAS = (0.005, 0.05, 0.1, 0.2, 0.27, 0.4, 0.6, 0.73, 0.8)
SETS = {"uadnet 0.2-0.8": (0.2, 0.4, 0.6, 0.8), "reference": (0.005, 0.05, 0.27, 0.73),
        "low 0.05-0.4": (0.05, 0.1, 0.2, 0.4), "wide 0.05-0.8": (0.05, 0.2, 0.4, 0.8)}
SETS.update({f"single {a:g}": (a,) for a in ALPHAS})


def case_scores(score: np.ndarray, fg: np.ndarray) -> dict[str, float]:
    """Candidate case scores of one postprocessed map (preprocessed grid) with its foreground."""
    from scipy import ndimage

    out = {}
    fg = np.asarray(fg) != 0
    inner = fg.copy()
    for z in range(fg.shape[0]):
        inner[z] = ndimage.binary_erosion(fg[z], iterations=2)
    for name, mask in (("fg", fg), ("fg eroded 2 vox", inner)):
        v = np.sort(score[mask].ravel()) if mask.any() else np.sort(score.ravel())
        for label, k in (("top 1 %", max(1, round(0.01 * v.size))), ("top 0.1 %", max(1, round(0.001 * v.size))),
                         ("top 20 vox", 20), ("max", 1)):
            out[f"{label}, {name}"] = float(v[-k:].mean())
    # normalised by the case's own typical residual (noise level, bias field differ between healthy cases)
    v = np.sort(score[fg].ravel()) if fg.any() else np.sort(score.ravel())
    median, mean, std = float(np.median(v)), float(v.mean()), float(v.std()) + 1e-8
    for label, k in (("top 1 %", max(1, round(0.01 * v.size))), ("top 0.1 %", max(1, round(0.001 * v.size))),
                     ("top 20 vox", 20)):
        top = float(v[-k:].mean())
        out[f"{label} / median, fg"] = top / (median + 1e-8)
        out[f"({label} - mean) / std, fg"] = (top - mean) / std
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="dev_brain")
    p.add_argument("--plans", default="uadnet_plans")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--only_case_scores", action="store_true", help="skip the severity sets (faster)")
    args = p.parse_args()
    use_root(args.root)
    from uadnet.evaluation.evaluator import list_cases
    from uadnet.imageio.reader_writer_registry import reader_writer_for
    from uadnet.inference.predictor import PredictionSettings, Predictor
    from uadnet.methods.cold_ensemble import ColdEnsembleScorer
    from uadnet.postprocessing import apply_postprocessing
    from uadnet.preprocessing.preprocessor import preprocess_case, revert_preprocessing
    from uadnet.scoring.scorers import score_volume
    from uadnet.training.validation import make_validation_set
    from uadnet.utilities.file_io import load_json

    dataset_id, name = DATASETS[args.dataset]
    raw = args.root / "raw" / name
    pred = Predictor(PredictionSettings(raw / "imagesTs", args.root / "unused", dataset_id, plans_name=args.plans,
                                        folds=["0"], precision=args.precision, progress_bar=False))
    fold = pred.folds[0]
    raw_pp = replace(fold.postprocessing, residual_normalisation=None)
    cfg, inf = pred.cfg, pred.cfg.inference
    in_plane = cfg.dim == 2

    alphas_needed = tuple(pred.plans.methods.cold_ensemble.severities) if args.only_case_scores else ALPHAS
    sets = {} if args.only_case_scores else SETS

    def single_maps(data: np.ndarray, fg: np.ndarray) -> dict[float, np.ndarray]:
        out = {}
        for a in alphas_needed:
            s, _ = score_volume(ColdEnsembleScorer(fold.model, [a], args.precision), data, cfg.patch_size,
                                pred.step_size, inf.gaussian_sigma_scale, inf.batch_size, pred.device, foreground=fg)
            out[a] = s
        return out

    def combine(maps: dict[float, np.ndarray], alphas: tuple[float, ...], fg, spacing) -> np.ndarray:
        m = np.mean([maps[a] for a in alphas], axis=0)
        return apply_postprocessing(m, fg, spacing, raw_pp, in_plane)

    splits = load_json(args.root / "preprocessed" / name / "splits_final.json")
    val = make_validation_set(args.root / "preprocessed" / name, pred.plans, pred.config_name, splits[0]["val"])
    val_maps = [(single_maps(c.corrupted, c.foreground), single_maps(c.healthy, c.foreground))
                for c in val]
    reader = reader_writer_for(pred.file_ending)
    kinds = load_json(raw / "dataset.json")["test_case_lesions"]
    images = {}
    for f in sorted((raw / "imagesTs").iterdir()):
        images.setdefault(f.name.rsplit("_", 1)[0], []).append(f)
    labels = list_cases(raw / "labelsTs")
    test = []
    for case, files in sorted(images.items()):
        image, props = reader.read_images(sorted(files))
        pre = preprocess_case(image, props, pred.plans, pred.config_name)
        lab = reader_writer_for(pred.file_ending).read_seg(labels[case])[0][0] > 0
        spacing = pre.properties["spacing_after_resampling"]
        test.append((case, pre, lab, single_maps(pre.data, pre.foreground), spacing))

    results = {"severities": {}, "case_scores": {}}
    for set_name, alphas in sets.items():
        v_s, v_y = [], []
        for c, (anom, _) in zip(val, val_maps):
            m = combine(anom, alphas, c.foreground, c.spacing)
            v_s.append(m[c.foreground])
            v_y.append(c.anomaly[c.foreground])
        val_ap = float(average_precision_score(np.concatenate(v_y), np.concatenate(v_s)))
        per_kind: dict[str, tuple[list, list]] = {}
        healthy_s, healthy_y, all_s, all_y = [], [], [], []
        for case, pre, lab, maps, spacing in test:
            m = revert_preprocessing(combine(maps, alphas, pre.foreground, spacing), pre.properties, pred.plans,
                                     order=1)
            s, y = m.ravel(), lab.ravel()
            all_s.append(s)
            all_y.append(y)
            if kinds[case] == "healthy":
                healthy_s.append(s)
                healthy_y.append(y)
            else:
                per_kind.setdefault(kinds[case], ([], []))[0].append(s)
                per_kind[kinds[case]][1].append(y)
        test_ap = float(average_precision_score(np.concatenate(all_y), np.concatenate(all_s)))
        kind_ap = {k: float(average_precision_score(np.concatenate(ys + healthy_y), np.concatenate(ss + healthy_s)))
                   for k, (ss, ys) in per_kind.items()}
        results["severities"][set_name] = {"validation_ap": val_ap, "test_ap": test_ap, "kind_ap": kind_ap}
        print(f"{set_name:>16}: val AP {val_ap:.3f}  test AP {test_ap:.3f}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in sorted(kind_ap.items())), flush=True)

    alphas = tuple(pred.plans.methods.cold_ensemble.severities)
    val_cs = [(case_scores(combine(a, alphas, c.foreground, c.spacing), c.foreground),
               case_scores(combine(h, alphas, c.foreground, c.spacing), c.foreground)) for c, (a, h) in zip(val, val_maps)]
    test_cs = [(kinds[case] != "healthy", case_scores(combine(maps, alphas, pre.foreground, sp), pre.foreground))
               for case, pre, lab, maps, sp in test]
    for key in val_cs[0][0]:
        v_auc = float(roc_auc_score([1] * len(val_cs) + [0] * len(val_cs),
                                    [a[key] for a, _ in val_cs] + [h[key] for _, h in val_cs]))
        t_auc = float(roc_auc_score([int(y) for y, _ in test_cs], [s[key] for _, s in test_cs]))
        results["case_scores"][key] = {"validation_auroc": v_auc, "test_auroc": t_auc}
        print(f"{key:>28}: validation case AUROC {v_auc:.3f}  test case AUROC {t_auc:.3f}", flush=True)
    suffix = "__case_scores" if args.only_case_scores else ""
    out = args.root / "records" / f"{args.dataset}__{args.plans}__inference{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
