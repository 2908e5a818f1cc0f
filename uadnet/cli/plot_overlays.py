"""``uadnet_plot_overlays -i IN -p PRED -o PNG_DIR``: anomaly maps drawn on their images, plus an HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt, require


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_plot_overlays",
        description="Draw each predicted case on its input image: the slices along z (the first array axis; axial "
                    "for axially acquired scans) with the most anomaly (image, "
                    "restoration, anomaly map overlay, predicted mask and label contours), one PNG per case, and "
                    "report.html listing the cases by score.")
    p.add_argument("-i", "--input_folder", type=Path, required=True,
                   help="input images given to uadnet_predict: <case>_XXXX.<ending> (channel 0 is drawn)")
    pred = p.add_argument("--pred_folder", type=Path, default=None,
                   help="uadnet_predict output: <case>.<ending> maps, <case>_mask, <case>_restoration_0000, "
                        "scores.csv, prediction.json")
    p.add_argument("-g", "--label_folder", type=Path, default=None,
                   help="optional ground truth <case>.<ending> (> 0 is anomalous), drawn as contours")
    p.add_argument("-o", "--output_folder", type=Path, required=True, help="where the PNGs and report.html go")
    p.add_argument("--num_slices", type=_positive_int, default=3,
                   help="z slices per 3D case, those with the largest anomaly-map sum (default 3)")
    p.add_argument("--summary", type=Path, default=None,
                   help="summary.json of uadnet_evaluate for the report header (default: PRED/summary.json if it "
                        "exists, where uadnet_evaluate writes it)")
    p.add_argument("--per_case", type=Path, default=None,
                   help="per_case.csv of uadnet_evaluate: per-case AP/Dice in the titles and the report (default: "
                        "PRED/per_case.csv if it exists)")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, pred, "-p")  # the older spelling; -p is the plans name in the other commands
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require(parser, args, "pred_folder", "--pred_folder")
    from uadnet.evaluation.evaluator import PER_CASE_FILE, SUMMARY_FILE
    from uadnet.imageio.base_reader_writer import ImageReadError
    from uadnet.visualization.overlays import plot_overlays

    # uadnet_evaluate's default outputs beside the maps are used unless other files are named
    summary, per_case = args.summary, args.per_case
    if summary is None and (args.pred_folder / SUMMARY_FILE).is_file():
        summary = args.pred_folder / SUMMARY_FILE
        print(f"metrics for the report header from {summary} (uadnet_evaluate's; --summary to choose another)")
    if per_case is None and (args.pred_folder / PER_CASE_FILE).is_file():
        per_case = args.pred_folder / PER_CASE_FILE
        print(f"per-case metrics from {per_case} (--per_case to choose another)")
    try:
        report = plot_overlays(args.input_folder, args.pred_folder, args.output_folder, args.label_folder,
                               args.num_slices, summary, per_case, args.disable_progress_bar)
    except (ImageReadError, OSError, ValueError) as e:  # OverlayError and EvaluationError are ValueErrors
        return report_error("uadnet_plot_overlays", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_plot_overlays", "rerun the same command (PNGs already written are replaced)")
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
