"""``uadnet_evaluate -p PRED -g LABELS``: voxel- and case-level metrics of anomaly maps against labels."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt, require


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_evaluate",
        description="Compare anomaly maps (uadnet_predict output) with ground-truth anomaly labels: exact pooled "
                    "voxel AP/AUROC, best Dice (oracle threshold), Dice/precision/recall at the calibrated "
                    "threshold, per-case metrics with bootstrap 95 % confidence intervals and case-level AUROC/AP "
                    "when healthy cases are present, lesion-wise detection by lesion size and, with --groups, AP "
                    "per lesion kind. Writes summary.json and per_case.csv.")
    pred = p.add_argument("--pred_folder", type=Path, default=None,
                   help="prediction folder: <case>.<ending> anomaly maps (+ optional scores.csv, prediction.json)")
    p.add_argument("-g", "--label_folder", type=Path, required=True,
                   help="label folder: <case>.<ending>, > 0 marks anomalous voxels (e.g. labelsTs)")
    p.add_argument("-o", "--output_file", type=Path, default=None,
                   help="summary JSON (default PRED/summary.json); per_case.csv is written beside it")
    p.add_argument("--threshold", type=_finite_float, default=None,
                   help="voxel threshold (score >= threshold is anomalous); overrides --threshold_from")
    p.add_argument("--threshold_from", type=Path, default=None,
                   help="JSON with 'voxel_threshold' and/or 'case_threshold' (default: PRED/prediction.json "
                        "if it exists)")
    p.add_argument("--num_bootstrap", type=int, default=1000, help="bootstrap resamples of the cases (default 1000; "
                                                                     "0 = no confidence intervals)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--allow_missing_labels", action="store_true",
                   help="ignore anomaly maps that have no label (with a warning) instead of stopping")
    p.add_argument("--groups", type=Path, default=None,
                   help="JSON mapping case -> group (lesion kind), or a dataset.json with 'test_case_lesions': "
                        "reports voxel AP/AUROC per group (pooled with all healthy cases) and lesion-wise "
                        "detection per group")
    p.add_argument("--mood", action="store_true",
                   help="the MOOD challenge's two metrics instead: pixel-level AP pooled over all voxels and "
                        "sample-level AP, for a folder written by uadnet_predict --output_format mood (PRED/pixel, "
                        "PRED/sample); LABELS is a label folder or MOOD's (pixel/, sample/); writes "
                        "PRED/mood_summary.json (or -o)")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, pred, "-p")  # the older spelling; -p is the plans name in the other commands
    add_version_argument(p)
    return p


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ci(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return "n/a"
    ci = f" [{m['ci_low']:.4f}, {m['ci_high']:.4f}]" if m["ci_low"] is not None else ""
    return f"{m['mean']:.4f}{ci} (n={m['n']})"


def _detected(b: dict[str, Any]) -> str:
    if b["detected"] is None:
        return f"{b['lesions']} (detection n/a: no voxel threshold)"
    rate = f" ({100 * b['detection_rate']:.0f} %)" if b["detection_rate"] is not None else ""
    return f"{b['detected']}/{b['lesions']} detected{rate}"


def print_summary(summary: dict[str, Any]) -> None:
    """A short human-readable report of ``summary`` on stdout."""
    p, c, t = summary["pooled"], summary["case_level"], summary["thresholds"]
    per = summary["per_case_mean"]
    print(f"cases: {summary['num_cases']} ({c['num_anomalous']} anomalous, {c['num_healthy']} healthy)")
    print(f"voxel threshold: {_fmt(t['voxel_threshold'])} ({t['voxel_threshold_source'] or 'none'})")
    print(f"pooled voxel AP {_fmt(p['ap'])}  AUROC {_fmt(p['auroc'])}  best Dice {_fmt(p['best_dice'])} "
          f"(oracle threshold {_fmt(p['best_dice_threshold'])})")
    print(f"at the threshold: Dice {_fmt(p['dice_at_threshold'])}  precision {_fmt(p['precision_at_threshold'])}  "
          f"recall {_fmt(p['recall_at_threshold'])}")
    print(f"per case, mean [95 % CI]: AP {_ci(per['ap'])}; Dice {_ci(per['dice_at_threshold'])}; "
          f"best Dice {_ci(per['best_dice'])}")
    print(f"case level: AUROC {_fmt(c['auroc'])}  AP {_fmt(c['ap'])}  sensitivity {_fmt(c['sensitivity'])}  "
          f"specificity {_fmt(c['specificity'])}")
    lw = summary["lesion_wise"]
    for b in [*lw["bins"], lw["all"]]:
        print(f"lesions {b['bin']}: {_detected(b)}")
    if lw["false_positive_components"] is not None:
        print(f"false-positive components: {lw['false_positive_components']} "
              f"({lw['false_positive_components_in_healthy_cases']} in {lw['num_healthy_cases']} healthy cases)")
    for name, g in (summary.get("groups") or {}).items():
        print(f"group {name} ({g['num_cases']} cases + {g['num_healthy_cases_added']} other healthy): voxel AP "
              f"{_fmt(g['ap'])}  voxel AUROC {_fmt(g['auroc'])}  case AUROC {_fmt(g['case_auroc'])}  "
              f"lesions {_detected(g['lesion_wise']['all'])}")
    print(f"wrote {summary['files']['summary']} and {summary['files']['per_case']}")


def _main_mood(args: argparse.Namespace) -> int:
    """``--mood``: the MOOD challenge's pixel- and sample-level AP (uadnet.evaluation.mood)."""
    from uadnet.evaluation.mood import evaluate_mood
    from uadnet.imageio.base_reader_writer import ImageReadError

    unused = [flag for flag, given in (("--threshold", args.threshold is not None), ("--groups", args.groups),
                                       ("--threshold_from", args.threshold_from)) if given]
    if unused:
        print(f"uadnet_evaluate: error: --mood computes threshold-free AP only; leave out {', '.join(unused)}",
              file=sys.stderr)
        return 1
    try:
        summary = evaluate_mood(args.pred_folder, args.label_folder, args.output_file, args.disable_progress_bar)
    except (ImageReadError, OSError, ValueError) as e:  # EvaluationError is a ValueError
        return report_error("uadnet_evaluate", e)
    print(f"MOOD: {summary['num_cases']} cases ({summary['num_anomalous_cases']} abnormal): pixel-level AP "
          f"{_fmt(summary['pixel_ap'])}  sample-level AP {_fmt(summary['sample_ap'])}")
    print(f"wrote {summary['files']['summary']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require(parser, args, "pred_folder", "--pred_folder")
    from uadnet.evaluation.evaluator import evaluate_folder
    from uadnet.imageio.base_reader_writer import ImageReadError

    if args.mood:
        return _main_mood(args)
    try:
        summary = evaluate_folder(args.pred_folder, args.label_folder, args.output_file, args.threshold,
                                  args.threshold_from, args.num_bootstrap, args.seed, args.allow_missing_labels,
                                  args.disable_progress_bar, groups=args.groups)
    except (ImageReadError, OSError, ValueError) as e:  # EvaluationError is a ValueError
        return report_error("uadnet_evaluate", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_evaluate")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
