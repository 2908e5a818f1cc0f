"""``uadnet_demo``: the whole pipeline on the built-in demo brain dataset, resumable.

build the demo (if absent) → plan and preprocess → train fold 0 for a CPU time budget → predict the test set →
evaluate → overlays and an HTML report. Re-running skips finished stages (training continues with ``--c``).
"""

from __future__ import annotations

import argparse
import sys

from uadnet import paths
from uadnet.cli.common import INTERRUPTED_EXIT_CODE, add_version_argument, hidden_alias, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uadnet_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = p.add_argument("--time_budget", type=float, default=20.0, metavar="MINUTES",
                            help="training minutes (default %(default)s)")
    p.add_argument("--iterations", type=int, default=None, help="train exactly this many iterations instead")
    p.add_argument("--n_train", type=int, default=40, help="healthy training brains (default 40)")
    p.add_argument("--n_test", type=int, default=20, help="test brains (default 20)")
    p.add_argument("--resolution", type=float, default=2.0, help="isotropic spacing in mm (default 2; 1 = native)")
    p.add_argument("--id", type=int, default=990, help="dataset id (default 990)")
    p.add_argument("-m", "--method", default="cold_ensemble", help="method (default %(default)s)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    device = p.add_argument("--device", default="auto", help="auto (default: the best available), cpu, cuda or mps")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, budget, "--budget")  # the older name
    hidden_alias(p, device, "-device")  # nnU-Net's spelling
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
    except KeyboardInterrupt:
        code = report_interrupt("uadnet_demo")
    if code == INTERRUPTED_EXIT_CODE:
        print("uadnet_demo: rerun uadnet_demo to resume (finished stages are skipped, training continues)",
              file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    """The six stages; 0, or the exit code of the first stage that failed (130 for Ctrl-C)."""
    from uadnet.cli.evaluate import main as evaluate
    from uadnet.cli.make_demo_dataset import main as make_demo
    from uadnet.cli.plan_and_preprocess import main as plan
    from uadnet.cli.plot_overlays import main as overlays
    from uadnet.cli.predict import main as predict
    from uadnet.cli.train import main as train
    from uadnet.scoring.calibration import CALIBRATION_FILE
    from uadnet.utilities.checkpoints import FINAL, LATEST

    quiet = ["--disable_progress_bar"] if args.disable_progress_bar else []
    try:
        raw = paths.raw_folder(create=True)
        results = paths.results_folder(create=True)
    except paths.PathError as e:
        return report_error("uadnet_demo", e)
    name = f"Dataset{args.id:03d}_DemoBrain"
    dataset = raw / name
    steps = []
    print(f"[1/6] demo dataset {dataset}")
    if not (dataset / "dataset.json").is_file():
        steps.append(make_demo(["--id", str(args.id), "--n_train", str(args.n_train), "--n_test", str(args.n_test),
                                "--resolution", str(args.resolution), "-np", str(args.num_processes), *quiet]))
    print("[2/6] plan and preprocess")
    steps.append(plan(["-d", str(args.id), "--verify_dataset_integrity", "-np", str(args.num_processes), *quiet]))
    if any(steps):
        return max(steps)
    model = results / name / paths.model_folder_name(args.method, paths.DEFAULT_PLANS_NAME, "2d")
    fold = model / "fold_0"
    print(f"[3/6] train {args.method} fold 0 ({args.time_budget:g} min budget) → {fold}")
    if not (fold / CALIBRATION_FILE).is_file():
        length = (["--iterations", str(args.iterations)] if args.iterations
                  else ["--time_budget", str(args.time_budget)])
        resume = ["--c"] if (fold / LATEST).exists() or (fold / FINAL).exists() else []
        code = train([str(args.id), "0", "-c", "2d", "-m", args.method, "--device", args.device, *length, *resume,
                      *quiet])
        if code:
            return code
    out = results / name / "demo" / args.method
    print(f"[4/6] predict the test set → {out / 'predictions'}")
    code = predict(["-i", str(dataset / "imagesTs"), "-o", str(out / "predictions"), "-d", str(args.id), "-c", "2d",
                    "-m", args.method, "-f", "0", "--save_restorations", "--continue_prediction", "--device",
                    args.device, *quiet])
    if code:
        return code
    print("[5/6] evaluate against labelsTs")
    code = evaluate(["--pred_folder", str(out / "predictions"), "-g", str(dataset / "labelsTs"), *quiet])
    if code:
        return code
    print(f"[6/6] overlays and report → {out / 'overlays'}")
    code = overlays(["-i", str(dataset / "imagesTs"), "--pred_folder", str(out / "predictions"), "-g",
                     str(dataset / "labelsTs"), "-o", str(out / "overlays"), "--summary",
                     str(out / "predictions" / "summary.json"), "--per_case",
                     str(out / "predictions" / "per_case.csv"), *quiet])
    if code:
        return code
    print(f"\ndone. Look at:\n  {out / 'overlays' / 'report.html'}  (figures and metrics)\n"
          f"  {fold / 'progress.png'}  (training curves)\n  {out / 'predictions' / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
