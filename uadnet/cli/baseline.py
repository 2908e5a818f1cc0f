"""``uadnet_baseline -d DATASET -b {intensity,zscore} -i IN -o OUT``: a training-free baseline, written like
``uadnet_predict`` output so ``uadnet_evaluate`` and ``uadnet_plot_overlays`` compare it with the trained methods."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, report_error, report_interrupt
from uadnet.paths import DEFAULT_PLANS_NAME

BASELINES = ("intensity", "zscore")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_baseline",
        description="Score every case of IN with a training-free baseline: 'intensity' (the normalised intensity of "
                    "the channels where lesions are bright, e.g. FLAIR) or 'zscore' (voxel-wise z-score against the "
                    "healthy training cases; all images must lie on one registered grid). Fitted on the healthy "
                    "training cases and calibrated on the healthy validation cases of a fold of splits_final.json "
                    "(never on test data). Writes maps on the exact input grid, masks, scores.csv and "
                    "prediction.json to OUT, like uadnet_predict. Needs uadnet_plan_and_preprocess first.")
    p.add_argument("-d", "--dataset", required=True,
                   help="dataset id or name (planned with uadnet_plan_and_preprocess)")
    p.add_argument("-b", "--baseline", required=True, choices=BASELINES, help="which baseline")
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of raw input images (never written to)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (not the input folder)")
    p.add_argument("-c", "--configuration", default=None,
                   help="preprocessing configuration of the intensity baseline, 2d or 3d (default: the plans' "
                        "default); the z-score baseline works on the input grid")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans name (default %(default)s)")
    p.add_argument("-f", "--fold", type=int, default=0,
                   help="fit on this fold's 'train' cases and calibrate on its 'val' cases (default %(default)s)")
    p.add_argument("--fpr", type=float, default=0.01,
                   help="false-positive rate of the mask threshold on healthy data: 0.001, 0.01 or 0.05")
    p.add_argument("--clip", action="store_true",
                   help="clip the normalised intensities at 1 as the plans do for the networks (default: keep the "
                        "plans' normalisation but not the clipping, which ties every voxel above 1, i.e. brighter "
                        "than the upper percentile by the plans' headroom (normalization.high_maps_to), lesions "
                        "included)")
    p.add_argument("--num_parts", type=int, default=1, help="split the sorted cases into this many shards")
    p.add_argument("--part_id", type=int, default=0, help="which shard this process scores (0-based)")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already finished in OUT")
    p.add_argument("--output_format", choices=["uadnet", "mood"], default="uadnet",
                   help="uadnet (default) or mood: the MOOD challenge's layout, as uadnet_predict --output_format")
    p.add_argument("--disable_progress_bar", action="store_true")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.baselines.runner import BaselineRunner, BaselineSettings

    settings = BaselineSettings(
        input_folder=args.input, output_folder=args.output, dataset=args.dataset, baseline=args.baseline,
        configuration=args.configuration, plans_name=args.plans, fold=args.fold, fpr=args.fpr, clip=args.clip,
        num_parts=args.num_parts, part_id=args.part_id, continue_prediction=args.continue_prediction,
        progress_bar=not args.disable_progress_bar, output_format=args.output_format)
    try:
        return BaselineRunner(settings).predict_folder()
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # BaselineError is a ValueError
        return report_error("uadnet_baseline", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_baseline", "finished cases are kept: rerun with --continue_prediction")


if __name__ == "__main__":
    sys.exit(main())
