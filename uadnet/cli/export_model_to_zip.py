"""``uadnet_export_model_to_zip -d DATASET -o model.zip``: pack a trained model for sharing (see
:mod:`uadnet.inference.model_zip`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, report_error, report_interrupt
from uadnet.methods import DEFAULT_METHOD, available_methods
from uadnet.paths import DEFAULT_PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_export_model_to_zip",
        description="Write a zip of a trained model with exactly what prediction needs (plans, dataset.json, "
                    "fingerprint; per fold the checkpoint, calibration, postprocessing, progress.png and training "
                    "log) and manifest.json (versions, method, folds, healthy-validation figures, sha256 of every "
                    "file). Install it with uadnet_install_pretrained_model_from_zip, or predict from it with "
                    "uadnet_predict --model_folder model.zip.")
    p.add_argument("-d", "--dataset", default=None, help="dataset id or name (its model is read from UADNET_RESULTS)")
    p.add_argument("--model_folder", type=Path, default=None,
                   help="instead of -d/-m/-p/-c: the model folder <method>__<plans>__<configuration> itself")
    p.add_argument("-m", "--method", default=None, choices=sorted(available_methods()),
                   help=f"default {DEFAULT_METHOD}")
    p.add_argument("-p", "--plans", default=None, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    p.add_argument("-c", "--configuration", default=None, help="2d or 3d (default: the plans' default)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to include, e.g. 0 1 2 3 4 or all (default: every numbered fold with the checkpoint)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                   help="checkpoint of each fold (default %(default)s, the one calibration.json was made for)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the zip to write (name ending in .zip)")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.dataset is None) == (args.model_folder is None):
        parser.error("give either -d DATASET (with -m/-p/-c) or --model_folder PATH")
    if args.model_folder is not None and (args.method or args.plans or args.configuration):
        parser.error("with --model_folder the method, plans and configuration come from the folder's name: leave "
                     "out -m, -p and -c")
    from uadnet.inference.model_zip import export_model_zip
    from uadnet.inference.predictor import model_folder_for

    try:
        folder = args.model_folder or model_folder_for(args.dataset, args.method or DEFAULT_METHOD,
                                                       args.plans or DEFAULT_PLANS_NAME, args.configuration)
        manifest = export_model_zip(folder, args.output, args.folds, args.checkpoint)
    except (OSError, ValueError, RuntimeError) as e:
        return report_error("uadnet_export_model_to_zip", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_export_model_to_zip", "no zip was written; run the command again")
    size = args.output.stat().st_size / 2**20
    print(f"{args.output}: {manifest['dataset']}/{manifest['model_folder']}, folds {' '.join(manifest['folds'])}, "
          f"{len(manifest['files'])} files, {size:.1f} MiB (checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
