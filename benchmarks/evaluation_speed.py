"""Benchmark: the ranking metrics of ``uadnet_evaluate`` (pooled AP, AUROC, best Dice) against scikit-learn's.

    python benchmarks/evaluation_speed.py [--cases 96] [--repeats 3] [--write]

Pooled voxels of ``cases`` development-brain-sized maps (91 × 109 × 91 voxels each, the 2 mm MNI box): 80 % exact
zeros (background and cropped border, as in a predicted map), the rest half-normal scores, 0.2 % lesion voxels
shifted up, float32. Times, median of ``repeats`` in this process: :func:`uadnet.evaluation.metrics.ranking_metrics`
(one sort per class; what ``uadnet_evaluate`` runs for the pooled voxels and for each lesion kind) against the three
scikit-learn calls it replaced (``average_precision_score``, ``roc_auc_score``, ``precision_recall_curve`` for best
Dice); the two results must agree to 1e-9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, peak_rss_mb, write_section

CASE_SHAPE = (91, 109, 91)


def data(cases: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = cases * int(np.prod(CASE_SHAPE))
    y = rng.random(n) < 0.002
    s = np.abs(rng.normal(size=n)).astype(np.float32) + 1.5 * y.astype(np.float32)
    s[(rng.random(n) < 0.8) & ~y] = 0.0
    return s, y


def sklearn_metrics(s: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=False)
    denom = precision + recall
    dice = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return {"ap": float(average_precision_score(y, s)), "auroc": float(roc_auc_score(y, s)),
            "best_dice": float(dice[:-1].max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    from uadnet.evaluation.metrics import ranking_metrics

    s, y = data(args.cases)
    times: dict[str, list[float]] = {"uadnet": [], "sklearn": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = ranking_metrics(s, y)
        times["uadnet"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = sklearn_metrics(s, y)
        times["sklearn"].append(time.perf_counter() - t)
    for k in ("ap", "auroc", "best_dice"):
        assert abs(ours[k] - ref[k]) <= 1e-9, (k, ours[k], ref[k])
    med = {k: statistics.median(v) for k, v in times.items()}
    text = "\n".join([
        "## Evaluation metrics (`benchmarks/evaluation_speed.py`)", "",
        (f"{args.cases} maps of {' × '.join(map(str, CASE_SHAPE))} voxels pooled ({s.size:,} float32 voxels, 80 % "
        f"exact zeros), CPU {cpu_label()}, one process, median of {args.repeats}. Pooled AP, AUROC and best Dice, "
        "as `uadnet_evaluate` computes them for all voxels and again for each lesion kind:"), "",
        "| implementation | seconds | AP | AUROC | best Dice |", "|---|---|---|---|---|",
        (f"| scikit-learn (3 calls, an index sort each) | {med['sklearn']:.1f} | {ref['ap']:.6f} | {ref['auroc']:.6f} "
        f"| {ref['best_dice']:.6f} |"),
        (f"| uadnet `ranking_metrics` (one sort per class) | {med['uadnet']:.1f} | {ours['ap']:.6f} | "
        f"{ours['auroc']:.6f} | {ours['best_dice']:.6f} |"), "",
        (f"Ratio {med['sklearn'] / med['uadnet']:.1f}×; peak memory of the process {peak_rss_mb():.0f} MB. "
        "Reproduce: `python benchmarks/evaluation_speed.py --write`.")])
    print(text)
    if args.write:
        write_section("evaluation_speed", text)


if __name__ == "__main__":
    main()
