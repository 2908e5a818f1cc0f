"""``uadnet_predict -i IN -o OUT -d DATASET`` (or ``--model_folder PATH``, a model folder or zip): anomaly maps,
masks and case scores for a folder of raw cases; a thin layer over :class:`uadnet.inference.api.UadnetPredictor`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import (
    add_nnunet_hint,
    add_version_argument,
    hidden_alias,
    nnunet_hints,
    report_error,
    report_interrupt,
)
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
    p.add_argument("-d", "--dataset", default=None,
                   help="dataset id or name the model was trained on (its model is read from UADNET_RESULTS)")
    p.add_argument("--model_folder", type=Path, default=None,
                   help="instead of -d/-m/-p: a model folder <method>__<plans>__<configuration> or a model zip "
                        "(uadnet_export_model_to_zip; verified and extracted to a temporary folder, removed at the "
                        "end); needs no UADNET_* variables")
    p.add_argument("-c", "--configuration", default=None, help="2d or 3d (default: the plans' default)")
    p.add_argument("-m", "--method", default=None, choices=sorted(available_methods()),
                   help=f"default {DEFAULT_METHOD}")
    p.add_argument("-p", "--plans", default=None, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to ensemble, e.g. 0 1 2 3 4 or all (default: every numbered fold with the checkpoint, "
                        "else all)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file of each fold (default %(default)s, the one calibration.json was made for)")
    p.add_argument("--save_restorations", action="store_true", help="also write case_restoration_0000<ending>")
    p.add_argument("--save_uncertainty", action="store_true",
                   help="also write case_uncertainty<ending>: per voxel, the standard deviation of the ensemble "
                        "members' maps (severities x folds for cold_ensemble, else folds: needs 2 or more), in "
                        "map units; its mean and 95th percentile go into per_case/<case>.json")
    parts = p.add_argument("--num_parts", type=int, default=1, help="split the sorted cases into this many shards")
    part_id = p.add_argument("--part_id", type=int, default=0, help="which shard this process predicts (0-based)")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already finished in OUT")
    device = p.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the plans' compute."
                            "device; a device this machine lacks falls back to the best available one, with a warning)")
    step = p.add_argument("--step_size", type=float, default=None,
                          help="sliding-window step as a fraction of the patch")
    p.add_argument("--disable_tta", action="store_true",
                   help="no test-time mirroring (2^n x faster for n mirror axes; default: mirror as the thresholds "
                        "were calibrated, the plans' inference.mirror_axes; then the stated false-positive rate is "
                        "approximate)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: the plans'")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino", "auto"], default="torch",
                   help="runtime of the restorer: torch (default), onnxruntime (CPU, fp32) or openvino (CPU, "
                        "--precision fp32 or bf16) — both run an ONNX export made once per checkpoint and checked "
                        "against torch, and need pip install -e '.[deploy]' — or auto (the fastest, measured here)")
    p.add_argument("--fpr", type=float, default=0.01,
                   help="false-positive rate of the mask threshold on healthy data: 0.001, 0.01 or 0.05")
    p.add_argument("--output_format", choices=["uadnet", "mood"], default="uadnet",
                   help="uadnet (default): maps, masks, scores.csv; mood: the MOOD challenge's layout, OUT/pixel/<case>"
                        "<ending> (voxel scores in [0, 1]) and OUT/sample/<case><ending>.txt (case score in [0, 1]), "
                        "0.5 = the calibrated threshold (documentation/how_to_use.md)")
    p.add_argument("--disable_progress_bar", action="store_true")
    for action, spelling in ((device, "-device"), (step, "-step_size"), (parts, "-num_parts"), (part_id, "-part_id")):
        hidden_alias(p, action, spelling)  # nnU-Net's single-dash spellings
    why = ("uadnet_predict reads, scores and writes each case in this one process (no worker pools); to use more "
           "processes run several with --num_parts N --part_id I")
    add_nnunet_hint(p, "-npp", why)
    add_nnunet_hint(p, "-nps", why)
    add_nnunet_hint(p, "-tr", "uadnet has no trainer classes; -m/--method chooses the model")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    nnunet_hints("uadnet_predict", args)
    if args.dataset is None and args.model_folder is None:
        parser.error("give the dataset the model was trained on (-d DATASET) or the model (--model_folder PATH)")
    if args.model_folder is not None and (args.method or args.plans or args.dataset is not None):
        parser.error("with --model_folder the dataset, method and plans come from the model folder "
                     "(<method>__<plans>__<configuration>): leave out -d, -m and -p")
    from uadnet.inference.api import UadnetPredictor
    from uadnet.inference.predictor import PredictionError, PredictionSettings

    settings = PredictionSettings(
        input_folder=args.input, output_folder=args.output, dataset=args.dataset, configuration=args.configuration,
        method=args.method or DEFAULT_METHOD, plans_name=args.plans or DEFAULT_PLANS_NAME, folds=args.folds,
        checkpoint=args.checkpoint, save_restorations=args.save_restorations,
        save_uncertainty=args.save_uncertainty, num_parts=args.num_parts,
        part_id=args.part_id, continue_prediction=args.continue_prediction, device=args.device,
        step_size=args.step_size, mirror_axes=[] if args.disable_tta else None, precision=args.precision,
        backend=args.backend, fpr=args.fpr,
        progress_bar=not args.disable_progress_bar, output_format=args.output_format, model_folder=args.model_folder)
    try:
        with UadnetPredictor(settings) as predictor:
            print(predictor.describe())
            return predictor.predict_files(args.input, args.output)
    except (OSError, PredictionError, ValueError, KeyError, RuntimeError) as e:
        return report_error("uadnet_predict", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_predict", "finished cases are kept: rerun with --continue_prediction")


if __name__ == "__main__":
    sys.exit(main())
