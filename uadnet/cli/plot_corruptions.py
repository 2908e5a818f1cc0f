"""``uadnet_plot_corruptions -d ID``: PNG galleries of the synthetic anomalies each method is trained on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uadnet import paths
from uadnet.cli.common import add_version_argument, hidden_alias, report_error, report_interrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uadnet_plot_corruptions", description=(
        "Draw image / corrupted image / anomaly mask / change for random preprocessed training samples, one PNG "
        "per corruption family: the first thing to look at for a new modality."))
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name (run uadnet_plan_and_preprocess first)")
    p.add_argument("-c", "--configuration", default=None, help="configuration (default: the plans' default)")
    families = p.add_argument("--families", nargs="+", default=None,
                   help="corruption families (default: all registered)")
    p.add_argument("-n", "--num_samples", type=int, default=16, help="rows per gallery (default 16)")
    p.add_argument("-o", "--output_folder", type=Path, default=None,
                   help="where to write (default: <preprocessed dataset>/corruption_gallery)")
    p.add_argument("--channel", type=int, default=0, help="channel to show (default 0)")
    p.add_argument("--seed", type=int, default=0)
    hidden_alias(p, families, "-f")  # the older spelling; -f is the fold(s) in the other commands
    add_version_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uadnet.corruption.registry import CORRUPTIONS, NOT_DRAWN, build_corruption
    from uadnet.plans import PLANS_FILE, SPLITS_FILE, Plans
    from uadnet.utilities.file_io import load_json
    from uadnet.visualization.corruption_gallery import plot_corruption_gallery

    try:
        name = paths.resolve_dataset_name(args.dataset)
        pre = paths.preprocessed_folder() / name
        if not (pre / PLANS_FILE).is_file():
            raise FileNotFoundError(f"{pre / PLANS_FILE} not found: run uadnet_plan_and_preprocess -d {args.dataset}")
        plans = Plans.load(pre / PLANS_FILE)
        cfg_name = args.configuration or plans.default_configuration
        cfg = plans.configuration(cfg_name)
        folder = pre / cfg.data_identifier
        cases = sorted({c for s in load_json(pre / SPLITS_FILE) for c in s["train"] + s["val"]})
        cases = [c for c in cases if (folder / f"{c}.json").is_file()]
        if not cases:
            raise FileNotFoundError(f"no preprocessed cases in {folder}: run uadnet_plan_and_preprocess -d "
                                    f"{args.dataset} -c {cfg_name}")
        out = args.output_folder or pre / "corruption_gallery"
        families = args.families or [f for f in sorted(CORRUPTIONS) if f not in NOT_DRAWN]
        spacing = cfg.spacing
        for family in families:
            path = out / f"{family}_{cfg_name}.png"
            plot_corruption_gallery(folder, cases, build_corruption(family, plans), cfg.dim, cfg.patch_size, spacing,
                                    path, f"{name} — {family} ({cfg_name})", args.num_samples, args.seed,
                                    args.channel)
            print(f"wrote {path}")
    except (paths.PathError, OSError, ValueError, KeyError) as e:
        return report_error("uadnet_plot_corruptions", e)
    except KeyboardInterrupt:
        return report_interrupt("uadnet_plot_corruptions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
