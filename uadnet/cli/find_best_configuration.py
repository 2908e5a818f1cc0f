"""``uadnet_find_best_configuration -d D``: rank every trained (method, configuration) of a dataset and their
pairwise ensembles on held-out synthetic anomalies, and write ``inference_instructions.json``/``.txt`` (what
``uadnet_predict`` / ``uadnet_ensemble`` to run); see ``uadnet.evaluation.find_best``."""

from __future__ import annotations

import argparse
import sys

from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uadnet_find_best_configuration",
        description="Compare every trained model of a dataset in UADNET_RESULTS (<method>__<plans>__<configuration>) "
                    "and their pairwise ensembles on the folds' healthy validation cases with one held-out synthetic "
                    "anomaly family (pooled voxel AP; false-positive rate on the healthy versions at the calibrated "
                    "threshold), and write UADNET_RESULTS/<dataset>/inference_instructions.json and .txt: the "
                    "ranking, the choice and the commands that predict with it. Needs the preprocessed dataset.")
    p.add_argument("-d", "--dataset", required=True, help="dataset id (e.g. 1) or name (Dataset001_BrainT1)")
    p.add_argument("-p", "--plans", default=None, help="only models of this plans name (default: every plans)")
    p.add_argument("-m", "--methods", nargs="+", default=None, help="only these methods (default: every one trained)")
    p.add_argument("-c", "--configurations", nargs="+", default=None,
                   help="only these configurations, e.g. 2d 3d (default: every one trained)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds to compare on, e.g. 0 1 2 3 4 (default: every fold some model has; a model lacking "
                        "one is skipped and named with the uadnet_train command that makes it)")
    device = p.add_argument("--device", default=None, help="auto, cpu, cuda or mps (default: each model's plans)")
    p.add_argument("--disable_progress_bar", action="store_true")
    hidden_alias(p, device, "-device")  # nnU-Net's spelling
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.evaluation.find_best import TEXT_FILE, find_best_configuration
    from uadnet.paths import results_folder

    try:
        result = find_best_configuration(args.dataset, args.plans, args.methods, args.configurations, args.folds,
                                         args.device, progress_bar=not args.disable_progress_bar)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # FindBestError: ValueError; PathError: RuntimeError
        return report_error("uadnet_find_best_configuration", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_find_best_configuration", "run it again: nothing was written")
    print((results_folder() / result["dataset"] / TEXT_FILE).read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
