"""Development runs: train a plans variant on a development dataset, evaluate on its development test set.

    python benchmarks/development.py --root ROOT --dataset dev_brain --variant base
    python benchmarks/development.py --root ROOT --dataset dev_brain --variant small \\
        --set corruption.size_distribution=log_uniform --set corruption.shape_size_mm=[4,60]
    python benchmarks/development.py --root ROOT --dataset dev_brain --variant base_s1 --seed 1   # training noise
    python benchmarks/development.py --root ROOT --dataset dev_brain --baseline intensity
    python benchmarks/development.py --root ROOT --table [--write]

The development datasets (``uadnet_make_demo_dataset --variant dev_brain|dev_photo``,
``documentation/development_data.md``) are where defaults are chosen; the demo test set is reported once, not
tuned on. Every variant is planned for the same hardware profile (default: ``profiles/avx2_2core.json``, the
2-core AVX2-only fp32 machine whose 20-minute budget plans ~1000 iterations), then edited with ``--set
dotted.key=JSON`` into its own plans file ``uadnet_plans_<variant>.json``. Training runs the planned iterations
(``--precision bf16`` by default where the CPU has bf16 units, only to save time: the budget in samples is the
AVX2 machine's), fold 0;
then prediction of the development test set with that fold, ``uadnet_evaluate --groups dataset.json``. One
JSON record per run under ``ROOT/records/``; ``--table`` collects them (with the loss each row's weights were
trained with, and the training seed of repeats).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOC, cpu_label, use_root, write_section
from scipy.stats import spearmanr

PROFILE = Path(__file__).resolve().parent / "profiles" / "avx2_2core.json"
DATASETS = {"dev_brain": (991, "Dataset991_DevBrainT2"), "dev_photo": (992, "Dataset992_DevRetina2D"),
            "demo": (990, "Dataset990_DemoBrain")}


def _parse_set(text: str) -> tuple[list[str], Any]:
    key, _, value = text.partition("=")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.split("."), parsed


def edit_plans(plans: dict, edits: list[str], configuration: str = "2d") -> dict:
    """Apply ``dotted.key=JSON`` edits; keys starting with ``configuration.`` go to that configuration. The plans
    are first read and written back through :class:`uadnet.plans.Plans`, so older files are edited in the current
    form (e.g. with their ``validation`` section)."""
    from uadnet.plans import Plans

    plans = Plans.from_dict(plans).to_dict()
    for text in edits:
        keys, value = _parse_set(text)
        node = plans
        if keys[0] == "configuration":
            node, keys = plans["configurations"][configuration], keys[1:]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value  # the plans schema rejects unknown keys when the trainer loads the file
    return plans


def ensure_dataset(root: Path, dataset: str) -> str:
    from uadnet.cli.make_demo_dataset import main as make
    from uadnet.cli.plan_and_preprocess import main as plan

    dataset_id, name = DATASETS[dataset]
    if not (root / "raw" / name / "dataset.json").is_file():
        args = ["--variant", dataset] if dataset != "demo" else []
        assert make([*args, "-np", "2", "--disable_progress_bar"]) == 0
    if not (root / "preprocessed" / name / "uadnet_plans.json").is_file():
        assert plan(["-d", str(dataset_id), "--hardware_profile", str(PROFILE), "--disable_progress_bar",
                     "-c", "2d"]) == 0
    return name


def preprocess_variant(raw: Path, pre: Path, plans: dict) -> None:
    """Preprocess the training cases for a plans variant with its own 2d grid (its own data_identifier)."""
    from uadnet.dataset.raw_dataset import RawDataset
    from uadnet.planning.plan_and_preprocess import preprocess_training_case, preprocessing_key
    from uadnet.plans import Plans
    from uadnet.utilities.parallel import parallel_map

    typed = Plans.from_dict(plans)
    folder = pre / typed.configuration("2d").data_identifier
    folder.mkdir(exist_ok=True)
    key = preprocessing_key(typed, "2d")
    cases = RawDataset(raw).training_cases()
    tasks = [{"identifier": i, "images": [str(p) for p in c.images], "mask": str(c.mask) if c.mask else None,
              "output_folder": str(folder), "plans": plans, "configuration": "2d", "key": key}
             for i, c in cases.items()]
    parallel_map(preprocess_training_case, tasks, 2, "preprocess variant", names=list(cases),
                 disable_progress_bar=True)


def plans_name_of(variant: str) -> str:
    """The plans a trained variant ran with (``base``: the planner's own)."""
    return "uadnet_plans" if variant == "base" else f"uadnet_plans_{variant}"


def validation_curve(log: Path) -> list[tuple[int, float]]:
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        m = re.search(r"iteration (\d+): validation AP ([0-9.]+)", line)
        if m:
            out.append((int(m.group(1)), float(m.group(2))))
    return out


def summarize(summary: dict) -> dict:
    groups = {g: v["ap"] for g, v in (summary.get("groups") or {}).items() if v["ap"] is not None}
    bins = {b["bin"]: b["detection_rate"] for b in summary["lesion_wise"]["bins"]}
    return {"pooled_ap": summary["pooled"]["ap"], "best_dice": summary["pooled"]["best_dice"],
            "case_auroc": summary["case_level"]["auroc"], "group_ap": groups, "lesion_detection": bins,
            "group_case_auroc": {g: v.get("case_auroc") for g, v in (summary.get("groups") or {}).items()
                                 if v.get("case_auroc") is not None},
            "fp_components_healthy": summary["lesion_wise"]["false_positive_components_in_healthy_cases"]}


def run(root: Path, dataset: str, variant: str, edits: list[str], iterations: int | None, precision: str,
        baseline: str | None, force: bool, reuse: str | None = None, method: str = "cold_ensemble",
        seed: int = 0) -> dict:
    from uadnet.cli.baseline import main as run_baseline
    from uadnet.cli.evaluate import main as evaluate
    from uadnet.cli.predict import main as predict
    from uadnet.cli.train import main as train

    name = ensure_dataset(root, dataset)
    dataset_id = str(DATASETS[dataset][0])
    tag = f"baseline_{baseline}" if baseline else variant
    record_file = root / "records" / f"{dataset}__{tag}.json"
    if record_file.is_file() and not force:
        return json.loads(record_file.read_text())
    raw, pre = root / "raw" / name, root / "preprocessed" / name
    plans_name = "uadnet_plans" if baseline or variant == "base" and not edits else f"uadnet_plans_{variant}"
    plans = edit_plans(json.loads((pre / "uadnet_plans.json").read_text()), edits)
    if any(e.startswith("configuration.spacing") for e in edits):  # another grid: preprocess into its own folder
        plans["configurations"]["2d"]["data_identifier"] = f"{variant}_2d"
    (pre / f"{plans_name}.json").write_text(json.dumps(plans, indent=2))
    if any(e.startswith("configuration.spacing") for e in edits):
        preprocess_variant(raw, pre, plans)
    out = root / "predictions" / dataset / tag
    shutil.rmtree(out, ignore_errors=True)
    record: dict[str, Any] = {"dataset": dataset, "variant": tag, "edits": edits, "method": method,
                              "cpu": cpu_label(), "precision": precision}
    t0 = time.monotonic()
    if baseline:
        assert run_baseline(["-d", dataset_id, "-b", baseline, "-i", str(raw / "imagesTs"), "-o", str(out),
                             "--disable_progress_bar"]) == 0
    else:
        folder = root / "results" / name / f"{method}__{plans_name}__2d"
        shutil.rmtree(folder / "fold_0", ignore_errors=True)
        argv = [dataset_id, "0", "-p", plans_name, "-m", method, "--precision", precision, "--disable_progress_bar"]
        if iterations or not reuse:  # an explicit length: the plans' iterations are the emulated budget's, which a
            # faster machine's trainer would otherwise fit to its own clock (up to 1.25x longer)
            argv += ["--iterations", str(iterations or plans["configurations"]["2d"]["training"]["iterations"])]
        if seed:  # training seed (sampling, corruptions, initialisation); the validation anomalies keep theirs
            argv += ["--seed", str(seed)]
            record["seed"] = seed
        if reuse:  # the weights of another variant's run; only validation, postprocessing, calibration are redone
            source_plans = plans_name_of(reuse)
            source = root / "results" / name / f"{method}__{source_plans}__2d" / "fold_0"
            shutil.copytree(source, folder / "fold_0")
            for stale in ("postprocessing.json", "calibration.json", "checkpoint_final.pth", "uadnet_plans.json"):
                (folder / "fold_0" / stale).unlink(missing_ok=True)
            argv.append("--c")
            record["reused_training_of"] = reuse
        assert train(argv) == 0
        trained_plans = folder.parent / f"{method}__{source_plans}__2d" if reuse else folder
        record["loss"] = loss_in_plans(json.loads((trained_plans / "uadnet_plans.json").read_text()), method)
        record["train_minutes"] = round((time.monotonic() - t0) / 60, 2)
        calibration = json.loads((folder / "fold_0" / "calibration.json").read_text())
        record["case_score"] = calibration.get("case_score", {}).get("reduction", "mean_of_top_fraction")
        record["validation_curve"] = validation_curve(folder / "fold_0" / "training_log.txt")
        pp = json.loads((folder / "fold_0" / "postprocessing.json").read_text())
        record["postprocessing"] = [k for k, v in pp["postprocessing"].items() if v]
        record["validation_ap_postprocessed"] = pp["validation_ap_all_voxels"]["after"]
        assert predict(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", dataset_id, "-p", plans_name, "-m", method,
                        "-f", "0",
                        "--precision", precision, "--disable_progress_bar"]) == 0
    assert evaluate(["-p", str(out), "-g", str(raw / "labelsTs"), "--groups", str(raw / "dataset.json"),
                     "--num_bootstrap", "0", "--disable_progress_bar"]) == 0
    record.update(summarize(json.loads((out / "summary.json").read_text())))
    record["test_cases"] = len(list((raw / "labelsTs").iterdir()))
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(record, indent=2))
    return record


# how the rows were trained (records without the field: bf16, the only precision used before it)
PRECISION_LABELS = {"bf16": "with bf16 autocast", "fp32": "in fp32"}
# how the case scores behind "case AUROC" were computed (records without the field: the plain top 1 %, then the only one)
CASE_SCORE_LABELS = {"mean_of_top_fraction": "top 1 %", "mean_of_top_fraction_over_median": "top 1 % / median",
                     "top_fractions_over_median_vs_healthy": "top 1 % and 0.01 % vs healthy"}


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _grid(record: dict) -> str:
    return "edited spacing" if any(e.startswith("configuration.spacing") for e in record["edits"]) else \
        "the plans' spacing"


def _validation_edits(record: dict) -> str:
    edits = [e for e in record["edits"] if e.startswith(("validation.", "configuration.training.validation_size_law"))]
    return ", ".join(sorted(edits)) or "validation as planned"


def rank_correlations_per_grid(rows: list[dict]) -> list[str]:
    """Spearman of validation AP against development-test pooled AP among runs whose validation cases are the same
    data (same grid, same validation edits): trained runs by final validation AP, and all runs (inference-only
    variants too) by validation AP after postprocessing."""
    lines = []
    comparable = [r for r in rows if r.get("validation_curve")]
    for key in sorted({(_grid(r), _validation_edits(r)) for r in comparable}):
        same = [r for r in comparable if (_grid(r), _validation_edits(r)) == key]
        trained = [r for r in same if not r.get("reused_training_of")]
        parts = []
        if len(trained) >= 3:
            rho = spearmanr([r["validation_curve"][-1][1] for r in trained], [r["pooled_ap"] for r in trained])[0]
            parts.append(f"{len(trained)} trained runs by final validation AP {rho:.2f}")
        post = [r for r in same if r.get("validation_ap_postprocessed") is not None]
        if len(post) >= 3:
            rho = spearmanr([r["validation_ap_postprocessed"] for r in post], [r["pooled_ap"] for r in post])[0]
            parts.append(f"{len(post)} runs incl. inference-only variants by postprocessed validation AP {rho:.2f}")
        if parts:
            lines += ["", f"Same validation data ({key[0]}; {key[1]}): Spearman over " + "; ".join(parts) + "."]
    return lines


def loss_in_plans(plans: dict, method: str) -> str:
    """The loss ``method`` trains with under these plans: its own section's (the DDPM methods), else the 2d
    configuration's ``training.loss`` (restorers; plans written before the field: L1, the default then)."""
    section = plans.get("methods", {}).get(method, {})
    return section.get("loss") or plans["configurations"]["2d"]["training"].get("loss", "l1")


def training_loss(root: Path, record: dict) -> str:
    """The loss the row's weights were trained with: recorded, else read from the plans of the run that trained
    them (``reused_training_of`` for inference-only rows); "–" for baselines or when the plans are gone."""
    if record.get("loss"):
        return record["loss"]
    if record["variant"].startswith("baseline_"):
        return "–"
    variant = record.get("reused_training_of") or record["variant"]
    plans = root / "preprocessed" / DATASETS[record["dataset"]][1] / f"{plans_name_of(variant)}.json"
    if not plans.is_file():
        return "–"
    return loss_in_plans(json.loads(plans.read_text()), record.get("method", "cold_ensemble"))


def test_cases(record: dict) -> int:
    """Development test cases a record was evaluated on (records written before this field: 24, the default then)."""
    return int(record.get("test_cases", 24))


def table(root: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json"))
            if "__inference" not in p.name]
    lines = []
    for dataset in sorted({r["dataset"] for r in rows}):
        sel = [r for r in rows if r["dataset"] == dataset]
        kinds = sorted({k for r in sel for k in r["group_ap"]})
        bins = list(sel[0]["lesion_detection"])
        counts = ", ".join(str(n) for n in sorted({test_cases(r) for r in sel}))
        precision = " / ".join(sorted({PRECISION_LABELS[r.get("precision", "bf16")] for r in sel if not r.get(
            "variant", "").startswith("baseline")}))
        lines += [f"**{dataset}** (CPU: {sel[0]['cpu']}; trained {precision or '–'}, fold 0; {counts} test cases)", "",
                  "| variant | loss | iterations | final val. AP | pooled AP | case AUROC | case score | "
                  + " | ".join(f"AP {k}" for k in kinds)
                  + " | " + " | ".join(f"det. {b}" for b in bins) + " | FP comp. healthy |",
                  "|---" * (8 + len(kinds) + len(bins)) + "|"]
        for r in sel:
            curve = r.get("validation_curve") or []
            val = _f(curve[-1][1]) if curve else "–"
            iterations = str(curve[-1][0]) if curve else "–"
            name = r["variant"] + (f" (seed {r['seed']})" if r.get("seed") else "")
            lines.append(f"| {name} | {training_loss(root, r)} | {iterations} | {val} | {_f(r['pooled_ap'])} | "
                         f"{_f(r['case_auroc'])} | "
                         f"{CASE_SCORE_LABELS.get(r.get('case_score', 'mean_of_top_fraction'), r.get('case_score'))} | "
                         + " | ".join(_f(r["group_ap"].get(k)) for k in kinds) + " | "
                         + " | ".join(_f(r["lesion_detection"].get(b)) for b in bins)
                         + f" | {r['fp_components_healthy']} |")
        trained = [r for r in sel if r.get("validation_curve") and not r.get("reused_training_of")]
        if len(trained) >= 3:
            rho = spearmanr([r["validation_curve"][-1][1] for r in trained], [r["pooled_ap"] for r in trained])[0]
            lines += ["", (f"Rank correlation (Spearman) of final validation AP with development-test pooled AP over "
                          f"the {len(trained)} trained variants: {rho:.2f}.")]
        lines += rank_correlations_per_grid(sel)
        for inf in sorted((root / "records").glob(f"{dataset}__*__inference.json")):
            sev = json.loads(inf.read_text())["severities"]
            rho = spearmanr([v["validation_ap"] for v in sev.values()], [v["test_ap"] for v in sev.values()])[0]
            lines += ["", f"Ensemble severities ({inf.name.split('__')[1]}, one trained fold): validation vs "
                          f"development-test AP over {len(sev)} severity sets, Spearman {rho:.2f}; "
                      + ", ".join(f"{k} {v['validation_ap']:.3f} / {v['test_ap']:.3f}" for k, v in sev.items()
                                  if not k.startswith("single"))]
        lines.append("")
    return "\n".join(lines)


def learning_curves(root: Path, path: Path) -> bool:
    """Validation AP against iteration of every trained variant, one panel per development dataset; False (nothing
    drawn) when the records hold no trained run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json")) if "__inference" not in p.name]
    trained = [r for r in rows if r.get("validation_curve") and not r.get("reused_training_of")]
    datasets = sorted({r["dataset"] for r in trained})
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for r in (r for r in trained if r["dataset"] == dataset):
            it, ap = zip(*r["validation_curve"])
            ax.plot(it, ap, marker=".", label=f"{r['variant']} (test AP {r['pooled_ap']:.3f})")
        ax.set(title=f"{dataset}: validation AP vs iteration", xlabel="iteration", ylabel="validation AP")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", choices=sorted(DATASETS), default="dev_brain")
    p.add_argument("--variant", default="base")
    p.add_argument("--set", dest="edits", action="append", default=[], metavar="KEY=JSON")
    p.add_argument("--iterations", type=int, default=None, help="default: the plans' (AVX2 budget)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="default: bf16 where the CPU has bf16 units (avx512_bf16, amx_bf16), else fp32 (bf16 is "
                        "emulated there, ~15x slower)")
    p.add_argument("--baseline", choices=["intensity", "zscore"], default=None)
    p.add_argument("--method", default="cold_ensemble", help="method to train (default cold_ensemble)")
    p.add_argument("--seed", type=int, default=0, help="training seed (repeats of a row measure the training noise)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--reuse_training_of", default=None, metavar="VARIANT",
                   help="copy that variant's trained fold and redo only validation-dependent steps with this plans "
                        "variant (postprocessing choice, calibration)")
    p.add_argument("--table", action="store_true")
    p.add_argument("--write", action="store_true")
    p.add_argument("--section", default="development",
                   help="with --write: the documentation/benchmarks.md block to replace (default development)")
    p.add_argument("--title", default="Development runs", help="with --write: the block's heading")
    args = p.parse_args()
    use_root(args.root)
    if args.precision is None:
        from uadnet.planning.hardware import _cpu_flags

        args.precision = "bf16" if _cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"
    if not args.table:
        rec = run(args.root, args.dataset, args.variant, args.edits, args.iterations, args.precision,
                  args.baseline, args.force, args.reuse_training_of, args.method, args.seed)
        print(json.dumps(rec, indent=1))
    text = table(args.root)
    print(text)
    if args.write:
        figure = DOC.parent / "figures" / f"{args.section}_learning_curves.png"
        drawn = learning_curves(args.root, figure)
        write_section(args.section, f"## {args.title}\n\nMachine: {platform.machine()}.\n\n{text}\n"
                      + (f"![learning curves](figures/{figure.name})\n\n" if drawn else "")
                      + f"Reproduce: `python benchmarks/development.py --root ROOT --table --write --section "
                      f"{args.section}` (the table{' and the figure' if drawn else ''} from the records in "
                      "`ROOT/records`; one row: `python benchmarks/development.py --root ROOT --dataset DATASET "
                      "--variant NAME [--set KEY=JSON ...]`, its edits stored in its record)")


if __name__ == "__main__":
    main()
