"""``uadnet_install_pretrained_model_from_zip model.zip``: install a model zip into ``UADNET_RESULTS`` (see
:mod:`uadnet.inference.model_zip`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet.cli.common import add_version_argument, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_install_pretrained_model_from_zip",
        description="Check a model zip (manifest, member names, sha256 of every file) and only then extract it to "
                    "UADNET_RESULTS/<dataset>/<method>__<plans>__<configuration>, through a temporary folder "
                    "renamed into place. Predict with it by -d or --model_folder.")
    p.add_argument("zip", type=Path, help="the model zip (uadnet_export_model_to_zip)")
    p.add_argument("--overwrite", action="store_true", help="replace a model folder that already exists")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet import paths
    from uadnet.inference.model_zip import extract_model_zip

    try:
        if not args.zip.is_file():
            raise FileNotFoundError(f"{args.zip} does not exist")
        # the results folder is created only once the zip has passed every check
        target = extract_model_zip(args.zip, paths.results_folder(), overwrite=args.overwrite)
    except (OSError, ValueError, RuntimeError) as e:
        return report_error("uadnet_install_pretrained_model_from_zip", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_install_pretrained_model_from_zip",
                                "nothing was installed (a model folder already there is kept); run it again")
    print(f"installed {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
