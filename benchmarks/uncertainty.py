"""Benchmark: how the uncertainty map (``uadnet_predict --save_uncertainty``) relates to the mask's errors.

    python benchmarks/uncertainty.py --pred OUT --labels LABELS [--images IN] [--plain OUT_PLAIN] [--write]

Reads a prediction folder made with ``--save_uncertainty`` (``<case>_uncertainty``, ``<case>_mask``) and the ground
truth (``LABELS/<case><ending>``, anomalous where > 0). Pools the voxels inside the foreground of every case (voxels
where any input channel of ``IN`` is nonzero; default: the input folder named in ``prediction.json``), ranks them by
uncertainty into ten equal-count bins (deciles) and reports per bin the voxel error rate of the mask at the calibrated
threshold, (FP + FN) / n. As references, the same for deciles of the map itself (the demo's errors are mostly false
positives at high scores, and the members disagree more where the score is high) and of closeness to the threshold
(−|map − t|, the obvious candidate for an error): uncertainty is useful where it adds to these. Also the AUROC of
uncertainty (and of a low map value) for the mask's false positives among its voxels, and for its false negatives
outside it. Draws ``documentation/figures/uncertainty_vs_error.png`` and prints a Markdown section (``--write`` puts
it into ``documentation/benchmarks.md``). ``--plain``: a prediction of the same cases without ``--save_uncertainty``,
to report the scoring time per case of both (from the records).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, trained_iterations, write_section

FIGURE = Path(__file__).resolve().parents[1] / "documentation" / "figures" / "uncertainty_vs_error.png"
BINS = 10


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def pooled_voxels(pred: Path, labels: Path, images: Path) -> dict[str, np.ndarray]:
    """Uncertainty, map, mask and label of every foreground voxel of every case with a record, pooled."""
    parts: dict[str, list[np.ndarray]] = {"uncertainty": [], "map": [], "mask": [], "label": []}
    for record in sorted((pred / "per_case").glob("*.json")):
        case = record.stem
        ending = "".join(Path(json.loads(record.read_text(encoding="utf-8"))["inputs"][0]).suffixes)
        channels = sorted(images.glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
        fg = np.any([_read(c) != 0 for c in channels], axis=0)
        for key, path in (("uncertainty", pred / f"{case}_uncertainty{ending}"), ("map", pred / f"{case}{ending}"),
                          ("mask", pred / f"{case}_mask{ending}"), ("label", labels / f"{case}{ending}")):
            parts[key].append(_read(path)[fg])
    return {k: np.concatenate(v) for k, v in parts.items()}


def by_deciles(key: np.ndarray, error: np.ndarray, positive: np.ndarray) -> list[dict[str, float]]:
    """Equal-count bins of ``key`` (ascending; ties broken by position): range, voxels, anomalous fraction, FP, FN
    and error rate per bin."""
    order = np.argsort(key, kind="stable")
    rows = []
    for chunk in np.array_split(order, BINS):
        e, p = error[chunk], positive[chunk]
        rows.append({"low": float(key[chunk].min()), "high": float(key[chunk].max()), "n": int(chunk.size),
                     "anomalous": float(p.mean()), "fp": int((e & ~p).sum()), "fn": int((e & p).sum()),
                     "error_rate": float(e.mean())})
    return rows


def auroc(score: np.ndarray, target: np.ndarray) -> float:
    """Probability that a random error voxel ranks above a random correct one (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    n1, n0 = int(target.sum()), int((~target).sum())
    return float((ranks[target].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def plot(unc_rows: list[dict], map_rows: list[dict], near_rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, BINS + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(x, [100 * r["error_rate"] for r in unc_rows], "o-", label="by uncertainty decile")
    ax.plot(x, [100 * r["error_rate"] for r in map_rows], "^:", color="tab:orange", label="reference: by map value")
    ax.plot(x, [100 * r["error_rate"] for r in near_rows], "s--", color="grey",
            label="reference: by closeness of the map to the threshold")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xlabel("decile of foreground voxels (1 = lowest, 10 = highest)")
    ax.set_ylabel("voxel error rate of the mask, (FP + FN) / n  [%]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE)
    plt.close(fig)


def reading(unc_rows: list[dict], auc_unc: float, auc_map: float, fp_auc: float, folds: int) -> str:
    """A sentence or three on what the numbers say (written from them, not by hand)."""
    out = (f"Reading: the error rate rises with uncertainty ({unc_rows[0]['error_rate']:.2%} in the lowest decile, "
           f"{unc_rows[-1]['error_rate']:.2%} in the highest)")
    out += (", but the map value alone ranks the errors better: most errors are false positives at high scores, "
            "where the members disagree too." if auc_map > auc_unc else ", and ranks them better than the map value.")
    if fp_auc < 0.5:
        out += (" Inside the mask uncertainty is higher on the true anomalies than on the false positives (consistent "
                "with a low severity leaving a lesion in place and a high one removing it): here the members' spread "
                "is a second anomaly signal rather than a flag for wrong voxels.")
    if folds < 2:
        out += " With one fold, disagreement between folds (closer to model uncertainty) is not part of this figure."
    return out


def _scoring_seconds(folder: Path) -> float:
    return float(np.mean([json.loads(r.read_text(encoding="utf-8"))["seconds"]["scoring"]
                          for r in (folder / "per_case").glob("*.json")]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", type=Path, required=True, help="uadnet_predict --save_uncertainty output folder")
    p.add_argument("--labels", type=Path, required=True, help="ground-truth folder (labelsTs)")
    p.add_argument("--images", type=Path, default=None, help="the input images (default: from prediction.json)")
    p.add_argument("--plain", type=Path, default=None, help="the same prediction without --save_uncertainty")
    p.add_argument("--note", default="", help="a sentence on the model added to the text (e.g. how it was made)")
    p.add_argument("--write", action="store_true", help="write the section to documentation/benchmarks.md")
    args = p.parse_args()
    info = json.loads((args.pred / "prediction.json").read_text(encoding="utf-8"))
    if "uncertainty" not in info:
        sys.exit(f"{args.pred} was predicted without --save_uncertainty")
    images = args.images or Path(info["settings"]["input_folder"])
    v = pooled_voxels(args.pred, args.labels, images)
    positive, error = v["label"] > 0, (v["mask"] > 0) != (v["label"] > 0)
    t = float(info["voxel_threshold"])
    unc_rows = by_deciles(v["uncertainty"].astype(np.float64), error, positive)
    amap = v["map"].astype(np.float64)
    map_rows, near_rows = by_deciles(amap, error, positive), by_deciles(-np.abs(amap - t), error, positive)
    auc_unc, auc_map, auc_near = auroc(v["uncertainty"], error), auroc(amap, error), auroc(-np.abs(amap - t), error)
    inside, outside = v["mask"] > 0, v["mask"] == 0
    fp_auc = (auroc(v["uncertainty"][inside], error[inside]), auroc(-amap[inside], error[inside]))
    fn_auc = (auroc(v["uncertainty"][outside], error[outside]), auroc(amap[outside], error[outside]))
    cases = len(list((args.pred / "per_case").glob("*.json")))
    iterations = [trained_iterations(Path(info["model_folder"]) / f"fold_{f}") for f in info["folds"]]
    model = (f"{info['method']} {info['configuration']}, fold(s) {', '.join(info['folds'])} "
             f"({', '.join(map(str, iterations))} iterations)")
    plot(unc_rows, map_rows, near_rows, f"demo test set: {cases} cases, {v['label'].size:,} foreground voxels\n{model}")
    timing = ""
    if args.plain is not None:
        timing = (f" Scoring time per case (records, {cpu_label()}, 2 threads): {_scoring_seconds(args.plain):.2f} s "
                  f"without, {_scoring_seconds(args.pred):.2f} s with `--save_uncertainty`.")
    lines = [
        "## Uncertainty and the mask's errors (`benchmarks/uncertainty.py`)",
        "",
        (f"`uadnet_predict --save_uncertainty` on the demo test set ({cases} cases; a report set: nothing was chosen "
         f"or tuned on it) with {model}, precision {info['precision']} on {cpu_label()}. {args.note}"
         f"{' ' if args.note else ''}Members = {info['uncertainty']['members']}; uncertainty = the standard "
         "deviation of the members' postprocessed maps, in map units. The foreground voxels of all cases (nonzero "
         f"input) are pooled ({v['label'].size:,} voxels, {error.mean():.2%} of them wrong in the mask at the "
         f"calibrated threshold {t:.3g}) and ranked into ten equal-count bins by uncertainty. Error rate = "
         "(FP + FN) / n of the mask in the bin. References: the same bins by map value, and by closeness of the map "
         "to the threshold, −|map − t|." + timing),
        "",
        ("| decile | uncertainty range | anomalous | FP | FN | error rate by uncertainty | by map value "
         "| by closeness |"),
        "|---|---|---|---|---|---|---|---|",
        *[f"| {i} | {r['low']:.3g}–{r['high']:.3g} | {r['anomalous']:.2%} | {r['fp']:,} | {r['fn']:,} | "
          f"**{r['error_rate']:.2%}** | {m['error_rate']:.2%} | {q['error_rate']:.2%} |"
          for i, (r, m, q) in enumerate(zip(unc_rows, map_rows, near_rows), start=1)],
        "",
        (f"AUROC for 'the mask is wrong at this voxel': uncertainty **{auc_unc:.3f}**, map value {auc_map:.3f}, "
         f"closeness to the threshold {auc_near:.3f}. Inside the mask ({int(inside.sum()):,} voxels, "
         f"{error[inside].mean():.0%} of them false positives), AUROC for 'false positive' of uncertainty "
         f"**{fp_auc[0]:.3f}**, of a low map value {fp_auc[1]:.3f}; outside it ({error[outside].mean():.3%} false "
         f"negatives), AUROC for 'false negative' of uncertainty {fn_auc[0]:.3f}, of the map value {fn_auc[1]:.3f}."),
        "",
        reading(unc_rows, auc_unc, auc_map, fp_auc[0], len(info["folds"])),
        "",
        f"![error rate against uncertainty](figures/{FIGURE.name})",
        "",
        ("Reproduce: `uadnet_predict -i IN -o OUT -d 990 --save_uncertainty` (or `--model_folder MODEL`), then "
         "`python benchmarks/uncertainty.py "
         "--pred OUT --labels raw/Dataset990_DemoBrain/labelsTs --write`"),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("uncertainty", text)


if __name__ == "__main__":
    main()
