"""``uadnet_ensemble -i OUT1 OUT2 ... -o OUT``: average prediction folders (maps, case scores) into one folder of the
same layout, with the thresholds rescaled as documented in ``uadnet.inference.ensemble``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_ensemble",
        description="Average the anomaly maps and case scores of prediction folders written by uadnet_predict or "
                    "uadnet_baseline (same cases, same grids, same --fpr). Each member is rescaled by its own "
                    "calibrated thresholds first, so a voxel is in the ensemble's mask when the members' "
                    "threshold-normalised scores average at least 1 (on healthy data at most the sum of the "
                    "members' false-positive rates; --recalibrate calibrates it instead). Writes maps, masks, "
                    "per_case/, scores.csv and prediction.json (members listed) to OUT.")
    p.add_argument("-i", "--input", type=Path, nargs="+", required=True,
                   help="two or more prediction folders (uadnet layout; never written to)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (not one of the inputs)")
    p.add_argument("--recalibrate", action="store_true",
                   help="calibrate the voxel and case thresholds at the members' --fpr on the folds' healthy "
                        "validation cases, scored again by each member's model (members predicted by uadnet_predict "
                        "from models of one dataset, plans, configuration grid and folds; needs UADNET_PREPROCESSED "
                        "with the preprocessed dataset). Default: the members' mean thresholds (a bound, not a "
                        "calibration)")
    device = p.add_argument("--device", default=None,
                            help="with --recalibrate: cpu, cuda, cuda:N or mps for scoring (default: the plans' "
                                 "compute.device)")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, device, "-device")  # nnU-Net's spelling
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.imageio.base_reader_writer import ImageReadError
    from uadnet.inference.ensemble import ensemble_folders

    try:
        n = ensemble_folders(args.input, args.output, progress_bar=not args.disable_progress_bar,
                             recalibrate_thresholds=args.recalibrate, device=args.device)
    except (ImageReadError, OSError, ValueError, KeyError, RuntimeError) as e:  # EnsembleError: ValueError
        return report_error("uadnet_ensemble", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_ensemble", "run it again: every case is rewritten")
    how = " (thresholds recalibrated on healthy validation cases)" if args.recalibrate else ""
    print(f"{n} case(s) averaged from {len(args.input)} folders into {args.output.resolve()}{how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
