"""Benchmark: does the default method learn on a CPU budget? Validation AP over training on the demo brain.

    python benchmarks/training_learning_curve.py --root /tmp/uadnet_bench [--budget 15] [--fold 0] [--write]

Builds the demo dataset (40 healthy 2 mm T1 brains from the MNI152 template) under ``ROOT`` if needed, plans and
preprocesses it with the defaults, and trains ``cold_ensemble`` 2d fold 0 for ``--budget`` minutes (the plans'
precision: bf16 where the CPU has it). The trainer validates every epoch on the fold's 8 held-out healthy cases
carrying seeded "many tasks" validation anomalies (fractal intensity, foreign patch: tasks the method never trains
on) and records pixel AP. Writes the curve to ``documentation/benchmarks.md`` and ``progress.png`` to
``documentation/figures/demo_training_progress.png``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOC, cpu_label, use_root, write_section

FIGURE = DOC.parent / "figures" / "demo_training_progress.png"


def evaluate_on_test_cases(root: Path, model_folder: Path, fold: int) -> str:
    """Predict the demo's 20 test cases (15 with tumour/WMH/infarct lesions the training never saw, 5 healthy)
    with this one fold and evaluate against labelsTs; returns a markdown paragraph."""
    import json

    from uadnet.cli.evaluate import main as evaluate
    from uadnet.cli.predict import main as predict

    raw = root / "raw" / "Dataset990_DemoBrain"
    out = root / "predictions" / f"fold_{fold}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    assert predict(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "990", "-f", str(fold),
                    "--disable_progress_bar"]) == 0
    seconds = (time.monotonic() - t0) / len(list(raw.glob("imagesTs/*_0000.nii.gz")))
    assert evaluate(["-p", str(out), "-g", str(raw / "labelsTs"), "--disable_progress_bar"]) == 0
    s = json.loads((out / "summary.json").read_text())
    pooled, case = s["pooled"], s.get("case_level") or {}
    pp = json.loads((model_folder / f"fold_{fold}" / "postprocessing.json").read_text())["postprocessing"]
    prevalence = pooled["num_positive"] / pooled["num_voxels"]
    case_auroc = "n/a" if case.get("auroc") is None else f"{case['auroc']:.3f}"
    return (f"Test set (demo `imagesTs`, lesions from generators the method never trains on; fold {fold} alone, "
            f"{seconds:.1f} s per 2 mm volume including I/O): pooled voxel AP **{pooled['ap']:.3f}** "
            f"(prevalence {prevalence:.4f}, so {pooled['ap'] / prevalence:.0f}× chance), AUROC {pooled['auroc']:.3f}, "
            f"best Dice {pooled['best_dice']:.3f}; case-level AUROC {case_auroc}. Postprocessing chosen on "
            f"validation: {', '.join(k for k, v in pp.items() if v) or 'none'}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--budget", type=float, default=15.0, help="training minutes")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    use_root(args.root)
    import torch

    from uadnet.cli.make_demo_dataset import main as make_demo
    from uadnet.cli.plan_and_preprocess import main as plan
    from uadnet.training.trainer import Trainer, TrainerSettings

    if not (args.root / "raw" / "Dataset990_DemoBrain" / "dataset.json").is_file():
        assert make_demo(["--disable_progress_bar"]) == 0
    assert plan(["-d", "990", "--disable_progress_bar"]) == 0
    fold = args.root / "results" / "Dataset990_DemoBrain" / "cold_ensemble__uadnet_plans__2d" / f"fold_{args.fold}"
    if fold.exists():
        shutil.rmtree(fold)
    t0 = time.monotonic()
    trainer = Trainer(TrainerSettings(dataset=990, fold=args.fold, time_budget_minutes=args.budget))
    trainer.run()
    minutes = (time.monotonic() - t0) / 60
    state = torch.load(fold / "checkpoint_latest.pth", weights_only=True)
    h, cfg = state["history"], trainer.cfg
    seconds = statistics.median(h["seconds"])
    rows = [f"| {int(i)} | {i * cfg.batch_size / 1000:.0f}k | {ap:.3f} |" for i, ap in zip(h["val_iteration"],
                                                                                          h["val_ap"])]
    test = evaluate_on_test_cases(args.root, fold.parent, args.fold)
    intro = (f"Demo dataset (40 healthy brains, 2 mm), default plans: patch {cfg.patch_size}, batch {cfg.batch_size}, "
        f"{trainer.precision}, {platform.machine()} CPU {cpu_label()}, {torch.get_num_threads()} threads. "
        f"{state['iteration']} iterations (median {seconds:.3f} s each, {cfg.batch_size / seconds:.0f} samples/s) "
        f"in {minutes:.1f} min including validation, postprocessing choice and calibration. Validation: pixel AP "
        "over the foreground of the fold's held-out healthy cases with seeded many-tasks validation anomalies "
        "(fractal intensity, foreign patch), scored with the ensemble of the plans' severities (EMA weights).")
    text = "\n".join([
        f"## Learning curve: `cold_ensemble` 2d on the demo brain (fold {args.fold})",
        "",
        intro,
        "",
        "| iteration | samples seen | validation AP |",
        "|---|---|---|",
        *rows,
        "",
        f"![progress](figures/{FIGURE.name})",
        "",
        test,
        "",
        (f"Reproduce: `python benchmarks/training_learning_curve.py --root ROOT --budget {args.budget:g} --fold "
         f"{args.fold} --write`"),
    ])
    print(text)
    if args.write:
        FIGURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(fold / "progress.png", FIGURE)
        write_section("learning", text)


if __name__ == "__main__":
    main()
