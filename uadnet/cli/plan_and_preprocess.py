"""``uadnet_plan_and_preprocess -d ID [ID ...]``: integrity check, fingerprint, plans, preprocessing, splits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet import paths
from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt


def _codebook_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 class, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_plan_and_preprocess",
        description="Fingerprint a raw dataset of healthy cases, write editable plans (uadnet_plans.json) and "
                    "preprocess the training cases. Re-running reuses finished work.")
    p.add_argument("-d", "--dataset", nargs="+", required=True, help="dataset id(s) (e.g. 1) or name(s)")
    p.add_argument("--verify_dataset_integrity", action="store_true",
                   help="check every file first and list all problems (recommended for a new dataset)")
    p.add_argument("-c", "--configurations", nargs="+", default=None,
                   help="configurations to preprocess (default: every planned one: 2d, and 3d when planned)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    memory = p.add_argument("--memory_target_gb", type=float, default=None,
                            help="training memory target per configuration (default: 4 on CPU, 8 on GPU)")
    budget = p.add_argument("--time_budget", type=float, default=-1.0, metavar="MINUTES",
                            help="training time budget the plans size training for (default: 20 on CPU, none on "
                                 "GPU; 0 means none)")
    device = p.add_argument("--device", choices=["cpu", "cuda", "mps"], default=None,
                            help="plan for this device (default: cuda if available, else cpu)")
    p.add_argument("--hardware_profile", type=Path, default=None,
                   help="plan for the hardware in this JSON file (hardware_profile.json or a dataset's "
                        "planning_hardware.json) instead of this machine's stored or measured profile")
    p.add_argument("--remeasure_hardware", action="store_true",
                   help="measure this machine's speed again instead of reusing UADNET_PREPROCESSED/"
                        "hardware_profile.json (plans depend on it: measure on an idle machine)")
    p.add_argument("--overwrite_plans", action="store_true", help="re-plan even if uadnet_plans.json exists")
    p.add_argument("--clean", action="store_true", help="recompute the fingerprint even if it exists")
    p.add_argument("--codebook_size", type=_codebook_size, default=None,
                   help="intensity classes per channel in the corruption codebook: a number, or 'auto' to let the "
                        "data choose (2-8, by silhouette score); default 5. A planning choice: with existing plans "
                        "add --overwrite_plans (the fingerprint is reused)")
    p.add_argument("--high_maps_to", type=float, default=None,
                   help="where the upper percentile of per-image (MRI-like) normalised channels lands, in (0, 1]; "
                        "default 0.7 (headroom for hyperintense lesions). The codebook follows it. A planning "
                        "choice: with existing plans add --overwrite_plans")
    no_pp = p.add_argument("--no_preprocessing", action="store_true", help="only fingerprint and plan")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, budget, "--time_budget_minutes")  # the older name
    for action, spelling in ((memory, "-gpu_memory_target"), (device, "-device"), (no_pp, "--no_pp")):
        hidden_alias(p, action, spelling)  # nnU-Net's spellings
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.dataset.integrity import DatasetIntegrityError, check_dataset_integrity
    from uadnet.planning.plan_and_preprocess import plan_and_preprocess_dataset

    budget = None if args.time_budget == 0 else args.time_budget
    failed = False
    for d in args.dataset:
        try:
            name = paths.resolve_dataset_name(d)
            if args.verify_dataset_integrity:
                check_dataset_integrity(paths.raw_folder() / name, args.num_processes, args.disable_progress_bar)
                print(f"[{name}] dataset integrity: OK")
            plan_and_preprocess_dataset(name, [] if args.no_preprocessing else args.configurations,
                                        args.num_processes, None, args.memory_target_gb, budget,
                                        args.overwrite_plans, args.clean, args.codebook_size, args.device,
                                        args.disable_progress_bar, hardware_profile=args.hardware_profile,
                                        remeasure_hardware=args.remeasure_hardware,
                                        high_maps_to=args.high_maps_to)
        except DatasetIntegrityError as e:
            print(f"\n{e}", file=sys.stderr)
            failed = True
        except (paths.PathError, OSError, ValueError, RuntimeError) as e:
            report_error("uadnet_plan_and_preprocess", e)
            failed = True
        except KeyboardInterrupt:
            return report_interrupt("uadnet_plan_and_preprocess",
                                    "rerun the same command: finished work (fingerprint, plans, cases) is reused")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
