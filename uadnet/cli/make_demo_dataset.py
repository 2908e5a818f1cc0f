"""``uadnet_make_demo_dataset``: healthy + lesioned brains from the MNI152 template shipped inside nilearn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet import paths
from uadnet.cli.common import add_version_argument, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uadnet_make_demo_dataset", description=(
        "Build a demo dataset (T1 + FLAIR-like brains; healthy training cases; test cases with tumour-like, "
        "white-matter and infarct-like lesions plus healthy ones) from the MNI152 template inside nilearn. "
        "No download. Re-running completes an interrupted build."))
    p.add_argument("--variant", choices=["demo", "dev_brain", "dev_photo"], default="demo",
                   help="demo (default): the T1 + FLAIR demo brain; dev_brain / dev_photo: the development datasets "
                        "(Dataset991_DevBrainT2, single-channel T2-like coronal brains; Dataset992_DevRetina2D, RGB "
                        "fundus photographs), built differently from the demo for choosing defaults "
                        "(documentation/development_data.md)")
    p.add_argument("--n_train", type=int, default=40, help="healthy training cases (default 40)")
    p.add_argument("--n_test", type=int, default=None, help="test cases, every 4th healthy (default 20; 96 for the "
                                                            "development datasets)")
    p.add_argument("--id", type=int, default=990, help="dataset id of the demo (default 990)")
    p.add_argument("--name", default="DemoBrain", help="dataset name of the demo (default DemoBrain)")
    p.add_argument("--resolution", type=float, default=2.0, help="isotropic spacing in mm (default 2; 1 = native)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-np", "--num_processes", type=int, default=2)
    p.add_argument("-o", "--output_root", type=Path, default=None, help="where to put it (default: $UADNET_RAW)")
    p.add_argument("--disable_progress_bar", action="store_true")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.demo.builder import make_demo_dataset
    from uadnet.demo.development import DEVELOPMENT_TEST_CASES, VARIANTS, make_development_dataset

    try:
        root = args.output_root or paths.raw_folder(create=True)
        if args.variant == "demo":
            n_test = 20 if args.n_test is None else args.n_test
            folder = make_demo_dataset(root, args.n_train, n_test, args.resolution, args.seed, args.id, args.name,
                                       args.num_processes, args.disable_progress_bar)
        else:
            n_test = DEVELOPMENT_TEST_CASES if args.n_test is None else args.n_test
            folder = make_development_dataset(args.variant, root, args.n_train, n_test, args.seed,
                                              args.num_processes, args.disable_progress_bar, args.resolution)
            args.id = VARIANTS[args.variant]["id"]
    except (paths.PathError, ImportError, OSError, ValueError, RuntimeError) as e:  # RuntimeError: a worker failed
        return report_error("uadnet_make_demo_dataset", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_make_demo_dataset", "rerun the same command to complete the build")
    print(f"demo dataset ready: {folder}\nnext: uadnet_plan_and_preprocess -d {args.id} --verify_dataset_integrity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
