"""Benchmark: detection quality of every method and baseline on the demo brain, at one equal CPU budget.

    python benchmarks/quality.py --root /tmp/uadnet_quality [--budget 8] [--configurations 2d 3d]
                                 [--methods cold_ensemble ... baseline_zscore] [--write] [--figures]

Builds the demo dataset under ``ROOT`` if needed (40 healthy training brains, 20 test brains — 15 with tumour,
WMH or infarct lesions from generators no method trains on, 5 healthy — at 2 mm; ``uadnet_make_demo_dataset``),
plans and preprocesses it with the defaults, then for every configuration × method:

* trained methods (``cold_ensemble``, ``cold_multistep``, ``image_conditioned``, ``synomaly`` and the
  ``autoencoder`` baseline): ``uadnet_train 990 0 -c CFG -m METHOD --time_budget BUDGET`` (the budget bounds the
  training iterations; validation, postprocessing choice and calibration come on top and are in "train wall"),
  then ``uadnet_predict`` of the test set with fold 0;
* training-free baselines (``baseline_intensity``, ``baseline_zscore``): ``uadnet_baseline``, calibrated on the
  fold-0 validation brains;

and ``uadnet_evaluate`` against ``labelsTs``. Each stage runs in a fresh process whose wall time and peak resident
memory (main process; data-loading workers reported separately) are recorded. Finished rows are kept
(``ROOT/quality/<cfg>/<method>/record.json``), so re-running resumes; ``--force`` redoes the listed methods.
``--write`` puts the table of every finished row into ``documentation/benchmarks.md``; ``--figures`` draws the
overlays of two test cases for ``cold_ensemble`` 2d into ``documentation/figures/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DOC, cpu_label, use_root, write_section

DATASET_ID = 990
NAME = f"Dataset{DATASET_ID:03d}_DemoBrain"
TRAINED = ("cold_ensemble", "cold_multistep", "image_conditioned", "synomaly", "autoencoder")
BASELINES = ("baseline_intensity", "baseline_intensity_clip", "baseline_zscore")
FIGURE_DIR = DOC.parent / "figures"

# Runs one console-script main in a fresh interpreter and reports its wall time and peak memory on the last line.
CHILD = """
import json, resource, sys, time, importlib
module, argv = sys.argv[1], json.loads(sys.argv[2])
t0 = time.monotonic()
rc = importlib.import_module(module).main(argv)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("QUALITY_JOB " + json.dumps({"rc": rc, "seconds": time.monotonic() - t0, "peak_mb": own,
                                   "worker_peak_mb": workers}))
"""


def run_job(module: str, argv: list[str], log: Path) -> dict:
    """Run ``module.main(argv)`` in a fresh process, output appended to ``log``; raise if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"\n$ {module} {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-c", CHILD, module, json.dumps(argv)], stdout=subprocess.PIPE,
                              stderr=f, text=True, env=os.environ.copy(), check=False)
        f.write(proc.stdout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("QUALITY_JOB ")]
    result = json.loads(lines[-1][len("QUALITY_JOB "):]) if lines else {"rc": proc.returncode}
    if proc.returncode != 0 or result.get("rc") not in (0, None):
        raise RuntimeError(f"{module} {' '.join(argv)} failed (see {log})")
    return result


def write_json(path: Path, data: dict) -> None:
    """Atomic: a crash never leaves a half-written record that would be taken for a finished row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def prepare(root: Path, n_train: int, n_test: int, resolution: float) -> Path:
    """Build (if needed), plan and preprocess the demo dataset; returns its raw folder."""
    use_root(root)
    raw = root / "raw" / NAME
    log = root / "quality" / "logs" / "prepare.log"
    if not (raw / "dataset.json").is_file():
        run_job("uadnet.cli.make_demo_dataset", ["--id", str(DATASET_ID), "--n_train", str(n_train), "--n_test",
                                                 str(n_test), "--resolution", str(resolution),
                                                 "--disable_progress_bar"], log)
    run_job("uadnet.cli.plan_and_preprocess", ["-d", str(DATASET_ID), "--disable_progress_bar"], log)
    return raw


def per_case_seconds(pred: Path) -> float:
    """Median over the test cases of the per-case seconds recorded by the predictor (preprocessing + scoring +
    reverting to the input grid; reading and writing the files are not included)."""
    totals = [sum(json.loads(p.read_text(encoding="utf-8")).get("seconds", {}).values())
              for p in sorted((pred / "per_case").glob("*.json"))]
    return statistics.median(totals) if totals else float("nan")


def run_row(root: Path, raw: Path, configuration: str, method: str, budget: float, force: bool,
            validation_every: int) -> dict:
    """Train (or resume), predict and evaluate one row; returns its record (also saved as record.json)."""
    folder = root / "quality" / configuration / method
    record_file = folder / "record.json"
    if record_file.is_file() and not force:
        return with_derived_fields(root, json.loads(record_file.read_text(encoding="utf-8")))
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(root / "results" / NAME / f"{method}__uadnet_plans__{configuration}", ignore_errors=True)
    log, pred = folder / "log.txt", folder / "predictions"
    record: dict = {"method": method, "configuration": configuration, "budget_minutes": budget,
                    "validation_every": validation_every,
                    "cpu": f"{platform.machine()} CPU {cpu_label()}, {len(os.sched_getaffinity(0))} cores"}
    if method in TRAINED:
        fold = root / "results" / NAME / f"{method}__uadnet_plans__{configuration}" / "fold_0"
        train_file = folder / "train.json"
        if not (train_file.is_file() and (fold / "calibration.json").is_file()):
            resume = ["--c"] if (fold / "checkpoint_latest.pth").is_file() else []
            # the budget, not the plans' iteration count, ends training
            write_json(train_file, run_job("uadnet.cli.train", [
                str(DATASET_ID), "0", "-c", configuration, "-m", method, "--iterations", str(10**9), "--time_budget",
                str(budget), "--validation_every", str(validation_every), *resume, "--disable_progress_bar"], log))
        train = json.loads(train_file.read_text(encoding="utf-8"))
        record.update(train_seconds=train["seconds"], train_peak_mb=train["peak_mb"],
                      train_worker_peak_mb=train["worker_peak_mb"])
        predict = run_job("uadnet.cli.predict", ["-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID),
                                                 "-c", configuration, "-m", method, "-f", "0", "--continue_prediction",
                                                 "--disable_progress_bar"], log)
    else:
        record.update(train_seconds=0.0, train_peak_mb=None, train_worker_peak_mb=None)
        kind = method.removeprefix("baseline_").removesuffix("_clip")
        clip = ["--clip"] if method.endswith("_clip") else []
        predict = run_job("uadnet.cli.baseline", ["-d", str(DATASET_ID), "-b", kind, *clip, "-i", str(raw / "imagesTs"),
                                                  "-o", str(pred), "-c", configuration, "--continue_prediction",
                                                  "--disable_progress_bar"], log)
    record.update(predict_seconds=predict["seconds"], predict_peak_mb=predict["peak_mb"],
                  seconds_per_volume=per_case_seconds(pred))
    run_job("uadnet.cli.evaluate", ["-p", str(pred), "-g", str(raw / "labelsTs"), "--disable_progress_bar"], log)
    summary = json.loads((pred / "summary.json").read_text(encoding="utf-8"))
    pooled, case = summary["pooled"], summary.get("case_level") or {}
    record.update(ap=pooled["ap"], auroc=pooled["auroc"], best_dice=pooled["best_dice"],
                  dice_at_1pct=pooled.get("dice_at_threshold"), case_auroc=case.get("auroc"),
                  prevalence=pooled["num_positive"] / pooled["num_voxels"])
    record = with_derived_fields(root, record)
    write_json(record_file, record)
    (folder / "failed.json").unlink(missing_ok=True)
    return record


def with_derived_fields(root: Path, record: dict) -> dict:
    """Add what can be read back from disk: iterations trained (training log), test cases and anomalous ones."""
    configuration, method = record["configuration"], record["method"]
    log = root / "results" / NAME / f"{method}__uadnet_plans__{configuration}" / "fold_0" / "training_log.txt"
    finished = re.findall(r"finished at iteration (\d+)", log.read_text(encoding="utf-8")) if log.is_file() else []
    summary = json.loads((root / "quality" / configuration / method / "predictions" / "summary.json")
                         .read_text(encoding="utf-8"))
    return {**record, "iterations": int(finished[-1]) if finished else None, "num_cases": summary["num_cases"],
            "num_anomalous": (summary.get("case_level") or {}).get("num_anomalous")}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def forward_passes(root: Path) -> dict[str, str]:
    """Network evaluations per patch at test time, read from the plans."""
    from uadnet.plans import PLANS_FILE, Plans

    m = Plans.load(root / "preprocessed" / NAME / PLANS_FILE).methods
    return {"cold_ensemble": f"1 (K = {len(m.cold_ensemble.severities)} batched)",
            "cold_multistep": str(m.cold_multistep.num_steps),
            "image_conditioned": str(m.image_conditioned.sampling_steps), "synomaly": f"≤ {m.synomaly.max_stages}",
            "autoencoder": "1"}


def table(records: list[dict], passes: dict[str, str], precision: str, n_train: int) -> str:
    """The markdown section: one row per finished (configuration, method); failed rows say so."""
    order = {m: i for i, m in enumerate(TRAINED + BASELINES)}
    records = sorted(records, key=lambda r: (r["configuration"], order.get(r["method"], 99)))
    done = [r for r in records if "ap" in r]
    first = done[0] if done else {}
    budgets = sorted({r["budget_minutes"] for r in records if r["method"] in TRAINED})
    # rows are kept across runs, so each names the machine it ran on (rows from before that: "not recorded")
    machines = " / ".join(sorted({r.get("cpu", "2 cores (CPU model not recorded)") for r in done})) or "?"
    lines = [
        "## Detection quality on the demo brain (`benchmarks/quality.py`)",
        "",
        (f"Demo test set: {first.get('num_cases', '?')} brains at 2 mm ({first.get('num_anomalous', '?')} with "
         "tumour / white-matter-hyperintensity / infarct lesions from generators no method trains on, the others "
         f"healthy), lesion prevalence {first.get('prevalence', float('nan')):.4f} of all voxels. Every trained row: "
         f"fold 0 of {n_train} healthy brains, **{' / '.join(f'{b:g}' for b in budgets)} minutes of training "
         f"iterations** on {machines} ({precision}; validation every {first.get('validation_every', '?')} iterations "
         "for all), then the final validation, postprocessing choice and calibration (all included in *train "
         "wall*) and prediction of the test set with that one fold. Baselines: no training; thresholds "
         "calibrated on the fold-0 validation brains. Dice @1 % FPR uses the voxel threshold calibrated at 1 % "
         "false positives on healthy validation data (never the test set). s / volume: median over the test "
         "cases of preprocessing + scoring + reverting to the input grid (file I/O excluded). Peak memory: the main "
         "process (data-loading workers below). One run per row."),
        "",
        ("| config | method | passes / patch | pooled AP | best Dice | Dice @1 % FPR | voxel AUROC | case AUROC "
         "| iterations | train wall (min) | s / volume | peak MB (train / predict) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        name = f"| {r['configuration']} | `{r['method']}` | {passes.get(r['method'], '0')} | "
        if "ap" not in r:
            lines.append(name + f"failed: {r.get('error', '?')} |" + " |" * 8)
            continue
        mem = f"{_fmt(r['train_peak_mb'], 0)} / {_fmt(r['predict_peak_mb'], 0)}"
        lines.append(name + f"**{_fmt(r['ap'])}** | {_fmt(r['best_dice'])} | {_fmt(r['dice_at_1pct'])} | "
                     f"{_fmt(r['auroc'])} | {_fmt(r['case_auroc'])} | {r.get('iterations') or '–'} | "
                     f"{r['train_seconds'] / 60:.1f} | {_fmt(r['seconds_per_volume'], 2)} | {mem} |")
    workers = [r["train_worker_peak_mb"] for r in done if r.get("train_worker_peak_mb")]
    if workers:
        lines += ["", f"Data-loading workers (2 per training run) peaked at {max(workers):.0f} MB each."]
    lines += ["", (f"Reproduce: `python benchmarks/quality.py --root /tmp/uadnet_quality --budget "
                   f"{budgets[-1] if budgets else 8:g} --write` (add `--configurations 3d --methods ...` for 3d rows; "
                   "finished rows are kept, so runs accumulate).")]
    return "\n".join(lines)


def figures(root: Path, raw: Path) -> None:
    """Overlays of two lesioned test cases (the best and the median per-case AP) for cold_ensemble 2d."""
    pred = root / "quality" / "2d" / "cold_ensemble" / "predictions"
    per_case = json.loads((pred / "summary.json").read_text(encoding="utf-8"))["cases"]
    lesioned = sorted((c for c in per_case if c.get("num_positive", 0) > 0), key=lambda c: -(c.get("ap") or 0))
    chosen = [lesioned[0]["case"], lesioned[len(lesioned) // 2]["case"]]
    sub = root / "quality" / "figure_inputs"
    shutil.rmtree(sub, ignore_errors=True)
    (sub / "images").mkdir(parents=True)
    (sub / "predictions").mkdir()
    for case in chosen:
        for f in raw.glob(f"imagesTs/{case}_*.nii.gz"):
            shutil.copy(f, sub / "images" / f.name)
        for f in pred.glob(f"{case}*.nii.gz"):
            shutil.copy(f, sub / "predictions" / f.name)
    out = root / "quality" / "figures"
    run_job("uadnet.cli.plot_overlays", ["-i", str(sub / "images"), "-p", str(sub / "predictions"), "-g",
                                         str(raw / "labelsTs"), "-o", str(out), "--num_slices", "3",
                                         "--disable_progress_bar"], root / "quality" / "logs" / "figures.log")
    FIGURE_DIR.mkdir(exist_ok=True)
    for i, case in enumerate(chosen):
        shutil.copy(out / f"{case}.png", FIGURE_DIR / f"demo_overlay_{i + 1}.png")
        print(f"wrote {FIGURE_DIR / f'demo_overlay_{i + 1}.png'} ({case})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--budget", type=float, default=8.0, help="training minutes per trained method")
    p.add_argument("--configurations", nargs="+", default=["2d"], choices=["2d", "3d"])
    p.add_argument("--methods", nargs="+", default=list(TRAINED + BASELINES), choices=list(TRAINED + BASELINES))
    p.add_argument("--validation_every", type=int, default=500,
                   help="iterations between validations, the same for every method (image_conditioned validates "
                        "with 50 sampling steps: frequent validation would dominate its wall time)")
    p.add_argument("--n_train", type=int, default=40)
    p.add_argument("--n_test", type=int, default=20)
    p.add_argument("--resolution", type=float, default=2.0)
    p.add_argument("--force", action="store_true", help="redo the listed rows even if finished")
    p.add_argument("--write", action="store_true", help="write the table to documentation/benchmarks.md")
    p.add_argument("--figures", action="store_true", help="overlays of two test cases into documentation/figures")
    args = p.parse_args()
    root = args.root.resolve()
    raw = prepare(root, args.n_train, args.n_test, args.resolution)
    for configuration in args.configurations:
        for method in args.methods:
            t0 = time.monotonic()
            try:
                r = run_row(root, raw, configuration, method, args.budget, args.force, args.validation_every)
            except RuntimeError as e:  # keep going: the other rows and the table are still worth having
                r = {"method": method, "configuration": configuration, "budget_minutes": args.budget,
                     "error": str(e)}
                write_json(root / "quality" / configuration / method / "failed.json", r)
                print(f"{configuration} {method}: FAILED {e}", flush=True)
                continue
            print(f"{configuration} {method}: AP {_fmt(r['ap'])}, best Dice {_fmt(r['best_dice'])}, case AUROC "
                  f"{_fmt(r['case_auroc'])} ({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
    records = []
    for folder in sorted(p for p in (root / "quality").glob("*/*") if p.is_dir() and p.parent.name in ("2d", "3d")):
        for name in ("record.json", "failed.json"):
            if (folder / name).is_file():
                r = json.loads((folder / name).read_text(encoding="utf-8"))
                records.append(with_derived_fields(root, r) if name == "record.json" else r)
                break
    from uadnet.plans import PLANS_FILE, Plans

    precision = Plans.load(root / "preprocessed" / NAME / PLANS_FILE).compute.precision
    text = table(records, forward_passes(root), precision, args.n_train)
    print(text)
    if args.write:
        write_section("quality", text)
    if args.figures:
        figures(root, raw)


if __name__ == "__main__":
    main()
