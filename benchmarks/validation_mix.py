"""Benchmark: does a validation anomaly mix rank trained runs as the development test does? (issue 12, item 4)

    python benchmarks/validation_mix.py --root ROOT --dataset dev_photo --set validation.corruption='"intensity_blobs"'

``ROOT`` is a ``benchmarks/development.py`` root. For every trained run of ``--dataset`` in ``ROOT/records`` (rows
that reused another run's training are skipped: same weights), fold 0's validation cases are drawn again with the
run's plans edited by ``--set`` (``validation.*`` keys, e.g. the family or ``small_anomalies``), scored with the
fold's final weights as prediction scores (precision, step, mirroring as calibrated), and their AP computed per
anomaly class (1: the family's anomalies, 2: the small ones), before and after the postprocessing the fold chose on
its own validation. Prints one row per run and the Spearman rank correlation of every measure with the runs'
development-test pooled AP — next to that of the validation AP the runs recorded. Inference only; nothing is
written but the printed table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, use_root
from development import DATASETS, _parse_set, plans_name_of


def fold_measures(dataset: str, variant: str, edits: list[str]) -> dict[str, float]:
    """AP per class (``raw 1``, ``raw 2``, ``post 1``, ``post 2``) and their means (``raw``, ``post``) of one run."""
    from uadnet import paths
    from uadnet.inference.predictor import PredictionSettings, Predictor
    from uadnet.plans import Plans
    from uadnet.scoring.average_precision import balanced, class_aps
    from uadnet.scoring.scorers import score_volume
    from uadnet.training.validation import make_validation_set

    dataset_id = str(DATASETS[dataset][0])
    pred = Predictor(PredictionSettings(Path("unused"), Path("unused"), dataset_id,
                                        plans_name=plans_name_of(variant), folds=["0"], progress_bar=False))
    fold = pred.folds[0]
    record = json.loads((fold.folder / "postprocessing.json").read_text(encoding="utf-8"))
    plans = pred.plans.to_dict()
    for text in edits:
        keys, value = _parse_set(text)
        if keys[0] != "validation" or len(keys) != 2:
            raise SystemExit(f"--set {text}: only validation.<key> edits are measured here")
        plans["validation"][keys[1]] = value
    plans = Plans.from_dict(plans)
    cases = make_validation_set(paths.preprocessed_folder() / DATASETS[dataset][1], plans, pred.config_name,
                                record["cases"])
    scorer, inf = pred.method.scorer(fold.model, pred.precision), pred.cfg.inference
    raw, post, labels = [], [], []
    for c in cases:
        score, restoration = score_volume(scorer, c.corrupted, pred.cfg.patch_size, pred.step_size,
                                          inf.gaussian_sigma_scale, inf.batch_size, pred.device,
                                          foreground=c.foreground, mirror_axes=pred.mirror_axes)
        done = pred.postprocess(fold, score, c.corrupted, restoration, c.foreground, c.spacing)
        raw.append(score[c.foreground])
        post.append(done[c.foreground])
        labels.append(c.anomaly[c.foreground])
    out: dict[str, float] = {}
    for kind, maps in (("raw", raw), ("post", post)):
        aps = class_aps(maps, labels)
        out.update({f"{kind} {k}": v for k, v in aps.items()})
        out[kind] = balanced(aps) or float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="dev_brain")
    p.add_argument("--set", action="append", default=[], metavar="validation.KEY=JSON")
    p.add_argument("--runs", nargs="*", help="variants to measure (default: every trained run of the dataset)")
    args = p.parse_args()
    use_root(args.root)
    from scipy.stats import spearmanr

    records = [json.loads(f.read_text(encoding="utf-8"))
               for f in sorted((args.root / "records").glob(f"{args.dataset}__*.json"))]
    records = [r for r in records if not r.get("reused_training_of") and (not args.runs or r["variant"] in args.runs)]
    if len(records) < 3:
        raise SystemExit(f"{len(records)} trained runs of {args.dataset} in {args.root / 'records'}: a rank "
                         "correlation needs at least 3 (benchmarks/development.py trains them)")
    rows = []
    for r in records:
        m = fold_measures(args.dataset, r["variant"], args.set)
        rows.append({"variant": r["variant"], "test": r["pooled_ap"], "recorded final": r["validation_curve"][-1][1],
                     "recorded post": r["validation_ap_postprocessed"], **m})
        print(json.dumps(rows[-1]), flush=True)
    keys = ["recorded final", "recorded post"] + [k for k in ("raw 1", "raw 2", "raw", "post 1", "post 2", "post")
                                                  if all(k in row for row in rows)]
    edits = " ".join(f"`--set {e}`" for e in args.set) or "the runs' own validation plans"
    print(f"\n{args.dataset}, {len(rows)} trained runs, fold 0, CPU {cpu_label()}; validation: {edits}\n")
    print("| run | test pooled AP | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for row in sorted(rows, key=lambda x: x["test"]):
        print(f"| {row['variant']} | {row['test']:.3f} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
    test = [row["test"] for row in rows]
    print("| Spearman with test | 1 | " + " | ".join(
        f"{spearmanr([row[k] for row in rows], test)[0]:.2f}" for k in keys) + " |")
    print("\n(raw: before the postprocessing; post: after the fold's own; 1 / 2: the family's / the small anomalies' "
          "AP; without a digit: their mean, as validation weighs them; chance: about the class's prevalence)")


if __name__ == "__main__":
    main()
