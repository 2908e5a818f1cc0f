"""``uadnet_ensemble -i OUT1 OUT2 ... -o OUT``: average prediction folders (maps, case scores) into one folder of the
same layout, with the thresholds rescaled as documented in ``uadnet.inference.ensemble``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_ensemble",
        description="Average the anomaly maps and case scores of prediction folders written by uadnet_predict or "
                    "uadnet_baseline (same cases, same grids, same --fpr). Each member is rescaled by its own "
                    "calibrated thresholds first, so a voxel is in the ensemble's mask when the members' "
                    "threshold-normalised scores average at least 1 (on healthy data at most the sum of the "
                    "members' false-positive rates). Writes maps, masks, per_case/, scores.csv and prediction.json "
                    "(members listed) to OUT.")
    p.add_argument("-i", "--input", type=Path, nargs="+", required=True,
                   help="two or more prediction folders (uadnet layout; never written to)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (not one of the inputs)")
    p.add_argument("--disable_progress_bar", action="store_true")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.imageio.base_reader_writer import ImageReadError
    from uadnet.inference.ensemble import ensemble_folders

    try:
        n = ensemble_folders(args.input, args.output, progress_bar=not args.disable_progress_bar)
    except (ImageReadError, OSError, ValueError, KeyError) as e:  # EnsembleError is a ValueError
        return report_error("uadnet_ensemble", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_ensemble", "run it again: every case is rewritten")
    print(f"{n} case(s) averaged from {len(args.input)} folders into {args.output.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
