"""``uadnet_predict -i IN -o OUT -d DATASET``: anomaly maps, masks and case scores for a folder of raw cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import report_error
from uadnet.methods import DEFAULT_METHOD, available_methods
from uadnet.paths import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_predict",
        description="Score every case of IN (raw files named like the training images: case_0000<ending>, ...) "
                    "with a trained model and write maps on the exact input grid, binary masks at the threshold "
                    "calibrated on healthy validation cases, scores.csv and prediction.json to OUT.")
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of raw input images (never written to)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (not the input folder)")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name the model was trained on")
    p.add_argument("-c", "--configuration", default=None, help="2d or 3d (default: the plans' default)")
    p.add_argument("-m", "--method", default=DEFAULT_METHOD, choices=sorted(available_methods()), help="default %(default)s")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans name (default %(default)s)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to ensemble, e.g. 0 1 2 3 4 or all (default: every numbered fold with the checkpoint, "
                        "else all)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file of each fold (default %(default)s, the one calibration.json was made for)")
    p.add_argument("--save_restorations", action="store_true", help="also write case_restoration_0000<ending>")
    p.add_argument("--num_parts", type=int, default=1, help="split the sorted cases into this many shards")
    p.add_argument("--part_id", type=int, default=0, help="which shard this process predicts (0-based)")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already finished in OUT")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the plans' compute.device; a "
                   "device this machine lacks falls back to the best available one, with a warning)")
    p.add_argument("--step_size", type=float, default=None, help="sliding-window step as a fraction of the patch")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: the plans'")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "auto"], default="torch",
                   help="runtime of the restorer: torch (default), onnxruntime (CPU, fp32; exported once per "
                        "checkpoint and checked against torch; needs pip install -e '.[deploy]') or auto (the faster "
                        "of the two, measured here)")
    p.add_argument("--fpr", type=float, default=0.01,
                   help="false-positive rate of the mask threshold on healthy data: 0.001, 0.01 or 0.05")
    p.add_argument("--disable_progress_bar", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.inference.predictor import PredictionError, PredictionSettings, Predictor

    settings = PredictionSettings(
        input_folder=args.input, output_folder=args.output, dataset=args.dataset, configuration=args.configuration,
        method=args.method, plans_name=args.plans, folds=args.folds, checkpoint=args.checkpoint,
        save_restorations=args.save_restorations, num_parts=args.num_parts, part_id=args.part_id,
        continue_prediction=args.continue_prediction, device=args.device, step_size=args.step_size,
        precision=args.precision, backend=args.backend, fpr=args.fpr, progress_bar=not args.disable_progress_bar)
    try:
        predictor = Predictor(settings)
        print(predictor.run_settings.describe())
        return predictor.predict_folder()
    except (OSError, PredictionError, ValueError, KeyError, RuntimeError) as e:
        return report_error("uadnet_predict", e)


if __name__ == "__main__":
    sys.exit(main())
