"""``uadnet_train DATASET FOLD``: train (or continue) one fold of a method's restorer."""

from __future__ import annotations

import argparse
import sys

from uadnet.cli.common import add_version_argument, report_error, report_interrupt
from uadnet.methods import DEFAULT_METHOD, available_methods
from uadnet.paths import DEFAULT_PLANS_NAME


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"FOLD must be 0-4 or 'all', got '{text}'") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_train",
        description="Train a restorer on the healthy training cases of one fold (settings from uadnet_plans.json, "
                    "overridable here). Under torchrun --nproc_per_node N the same command trains with "
                    "DistributedDataParallel.")
    p.add_argument("dataset", help="dataset id (e.g. 1) or name (Dataset001_BrainT1)")
    p.add_argument("fold", type=_fold, help="fold 0-4, or 'all' (train on every case)")
    p.add_argument("-c", "--configuration", default=None, help="2d or 3d (default: the plans' default)")
    p.add_argument("-m", "--method", default=DEFAULT_METHOD, choices=sorted(available_methods()), help="default %(default)s")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans name (default %(default)s)")
    p.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue from the newest valid checkpoint of this fold")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the plans' compute.device; a "
                   "device this machine lacks falls back to the best available one, with a warning)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, default=None, help="training iterations (default: the plans')")
    length.add_argument("--epochs", type=int, default=None, help="epochs of validation_every iterations")
    p.add_argument("--time_budget", type=float, default=None, metavar="MINUTES",
                   help="stop early to fit this many minutes (default: the plans' budget unless --iterations/"
                        "--epochs is given)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: the plans' (hardware)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network (default: the plans')")
    p.add_argument("-np", "--num_workers", type=int, default=None,
                   help="data-augmentation worker processes (default: the plans'; 0 = in the main process)")
    p.add_argument("--validation_every", type=int, default=None, help="iterations per validation (epoch)")
    p.add_argument("--checkpoint_every", type=int, default=None, help="iterations per checkpoint_latest.pth")
    p.add_argument("--seed", type=int, default=0, help="seed of data sampling, training corruptions and initialisation "
                   "(the validation anomalies use the plans' validation.seed)")
    p.add_argument("--no_validation", action="store_true", help="skip validation (no checkpoint_best.pth)")
    p.add_argument("--no_calibration", action="store_true", help="skip calibration.json")
    p.add_argument("--disable_progress_bar", action="store_true")
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.training.trainer import Trainer, TrainerSettings

    settings = TrainerSettings(
        dataset=args.dataset, fold=args.fold, configuration=args.configuration, method=args.method,
        plans_name=args.plans, device=args.device, iterations=args.iterations, epochs=args.epochs,
        time_budget_minutes=args.time_budget, precision=args.precision, compile=args.compile,
        num_workers=args.num_workers, validation_every=args.validation_every, checkpoint_every=args.checkpoint_every,
        seed=args.seed, continue_training=args.continue_training, validate=not args.no_validation,
        calibrate=not args.no_calibration, progress_bar=not args.disable_progress_bar)
    try:
        folder = Trainer(settings).run()
    except (OSError, ValueError, KeyError, RuntimeError, FloatingPointError) as e:  # FloatingPointError: NaN loss
        return report_error("uadnet_train", e)
    except KeyboardInterrupt:
        again = " ".join(["uadnet_train", *(sys.argv[1:] if argv is None else argv)])
        again += "" if args.continue_training else " --c"
        return report_interrupt("uadnet_train", f"continue from the last checkpoint with: {again}")
    print(f"results in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
