"""Benchmark: a whole folder through ``uadnet_predict``'s loop, pipelined (load ahead, export behind) against one
stage after the other, and its wall time against the sum of the network's scoring times.

    python benchmarks/folder_prediction.py --root ROOT [--repeats 3] [--write]

``ROOT`` holds a trained demo model (e.g. the folder of ``benchmarks/demo_end_to_end.py``: ``UADNET_RAW``,
``UADNET_PREPROCESSED``, ``UADNET_RESULTS`` under it). Predicts the demo's 20 test cases (2 mm) with fold 0,
alternating ``prefetch`` 0 (sequential) and 2 (the default) ``repeats`` times in this one process (the folds
are loaded once), and reports medians: wall time of the folder, the sum over cases of the scoring seconds (the
network part, from ``per_case/*.json``) and their ratio (target of issue 15: ≤ 1.2).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, trained_iterations, use_root, write_section


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    use_root(args.root)
    from uadnet.inference.folder_runner import FolderRun, run_folder
    from uadnet.inference.predictor import PredictionSettings, Predictor

    inp = args.root / "raw" / "Dataset990_DemoBrain" / "imagesTs"
    out = args.root / "folder_benchmark"
    pred = Predictor(PredictionSettings(inp, out, 990, folds=["0"], progress_bar=False))
    rows: dict[int, list[tuple[float, float]]] = {0: [], 2: []}
    for _ in range(args.repeats):
        for prefetch in (0, 2):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            assert run_folder(pred, FolderRun(inp, out, progress_bar=False, prefetch=prefetch)) == 0
            wall = time.perf_counter() - t0
            scoring = sum(json.loads(f.read_text())["seconds"]["scoring"] for f in (out / "per_case").glob("*.json"))
            rows[prefetch].append((wall, scoring))
            print(f"prefetch {prefetch}: wall {wall:.2f} s, scoring {scoring:.2f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    n = len(list(inp.glob("*_0000.nii.gz")))
    cpu = cpu_label()
    lines = ["## A folder of cases: pipelined prediction (`benchmarks/folder_prediction.py`)", "",
             (f"The {n} demo test cases (2 mm, 2 channels) predicted with fold 0 of a demo model trained for "
              f"{trained_iterations(pred.folds[0].folder)} iterations, "
             f"{pred.precision}, {platform.machine()} CPU {cpu}, 2 threads; one process, the two loops alternated, "
             f"medians of {args.repeats}. *Scoring* = the network part of every case (sliding window and "
             "postprocessing on the preprocessed grid), summed."), "",
             "| loop | wall time (s) | sum of scoring times (s) | wall / scoring | per case (s) |",
             "|---|---|---|---|---|"]
    for prefetch, label in ((0, "one stage after the other (`prefetch` 0, the predictor's default on a CPU)"),
                            (2, "pipelined: load 2 ahead, export behind (default on a GPU and for baselines)")):
        wall = statistics.median(w for w, _ in rows[prefetch])
        scoring = statistics.median(s for _, s in rows[prefetch])
        lines.append(f"| {label} | {wall:.2f} | {scoring:.2f} | {wall / scoring:.2f} | {wall / n:.2f} |")
    lines += ["", ("Reproduce: `python benchmarks/folder_prediction.py --root ROOT --write` (ROOT: a finished "
              "`benchmarks/demo_end_to_end.py` folder)")]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("folder_prediction", text)


if __name__ == "__main__":
    main()
