"""``uadnet_train DATASET FOLD``: train (or continue) one fold of a method's restorer."""

from __future__ import annotations

import argparse
import sys

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
    device = p.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: the plans' compute."
                            "device; a device this machine lacks falls back to the best available one, with a warning)")
    hidden_alias(p, device, "-device")  # nnU-Net's spelling
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, default=None, help="training iterations (default: the plans')")
    length.add_argument("--epochs", type=int, default=None, help="epochs of validation_every iterations")
    p.add_argument("--time_budget", type=float, default=None, metavar="MINUTES",
                   help="fit the run to this many minutes: shorter, or up to 1.25x the plans' iterations when they "
                        "set the length (default: the plans' budget unless --iterations/--epochs is given)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: the plans' (hardware)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network (default: the plans')")
    workers = p.add_argument("-np", "--num_workers", type=int, default=None,
                             help="data-augmentation worker processes (default: the plans'; 0 = in the main process)")
    hidden_alias(p, workers, "--num_processes")  # -np's long name in the other commands
    p.add_argument("--validation_every", type=int, default=None, help="iterations per validation (epoch)")
    p.add_argument("--checkpoint_every", type=int, default=None, help="iterations per checkpoint_latest.pth")
    p.add_argument("--seed", type=int, default=0, help="seed of data sampling, training corruptions and initialisation "
                   "(the validation anomalies use the plans' validation.seed)")
    p.add_argument("--no_validation", action="store_true", help="skip validation (no checkpoint_best.pth)")
    p.add_argument("--no_calibration", action="store_true", help="skip calibration.json")
    p.add_argument("--disable_progress_bar", action="store_true")
    add_nnunet_hint(p, "-tr", "uadnet has no trainer classes; -m/--method chooses what is trained")
    add_nnunet_hint(p, "-num_gpus", "train on several GPUs with torchrun --nproc_per_node N uadnet_train ...")
    add_version_argument(p)
    return p


NNUNET_CONFIGURATIONS = {"2d": "2d", "3d": "3d", "3d_fullres": "3d", "3d_lowres": "3d", "3d_cascade_fullres": "3d"}


def nnunet_order_hint(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """For nnU-Net's order ``DATASET CONFIGURATION FOLD`` (``uadnet_train 1 2d 0``) the uadnet command
    (``uadnet_train 1 0 -c 2d``); None for anything else. Looks at the positional words only, before parsing."""
    takes_value = {o for a in parser._actions if a.nargs != 0 for o in a.option_strings}
    positions, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word.startswith("-") and len(word) > 1:
            skip = word in takes_value
        else:
            positions.append(i)
    if len(positions) < 2 or argv[positions[1]] not in NNUNET_CONFIGURATIONS:
        return None
    dataset, configuration = argv[positions[0]], NNUNET_CONFIGURATIONS[argv[positions[1]]]
    fold = argv[positions[2]] if len(positions) > 2 else "FOLD"
    rest = [w for i, w in enumerate(argv) if i not in positions[:3]]
    return " ".join(["uadnet_train", dataset, fold, "-c", configuration, *rest])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    hint = nnunet_order_hint(parser, words)
    if hint:
        print(f"uadnet_train: error: uadnet takes DATASET FOLD and the configuration as an option (nnU-Net's order "
              f"is DATASET CONFIGURATION FOLD): run {hint}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    nnunet_hints("uadnet_train", args)
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
