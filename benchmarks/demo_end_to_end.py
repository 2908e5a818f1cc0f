"""Benchmark: the README's main job, ``uadnet_demo``, from an empty folder — wall time, peak memory, quality.

    python benchmarks/demo_end_to_end.py --root /tmp/uadnet_demo_bench [--write] [-- extra uadnet_demo args]

Runs ``python -m uadnet.cli.demo`` with its defaults in a fresh process with ``UADNET_RAW/PREPROCESSED/RESULTS``
under an empty ``ROOT`` (so it builds the demo dataset, plans, preprocesses, trains, predicts, evaluates and draws
the overlays), samples the resident memory of the whole process tree (the demo and every worker it starts) from
``/proc`` twice a second, and reports the wall time, the peak of that sum and the test-set metrics from its
``summary.json``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, use_root, write_section


def tree_rss_mb(root_pid: int) -> float:
    """Sum of VmRSS (MB) over ``root_pid`` and all its descendants, from ``/proc``."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry)] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    members, frontier = {root_pid}, [root_pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier and p not in members]
        members.update(children)
        frontier = children
    return sum(rss.get(p, 0) for p in members) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="an empty folder (or one from an earlier run to resume)")
    p.add_argument("--write", action="store_true", help="write the result to documentation/benchmarks.md")
    p.add_argument("demo_args", nargs="*", help="extra arguments for uadnet_demo (after --)")
    args = p.parse_args()
    root = args.root.resolve()
    use_root(root)
    log = root / "demo_log.txt"
    t0 = time.monotonic()
    peak = 0.0
    with log.open("w", encoding="utf-8") as f:
        proc = subprocess.Popen([sys.executable, "-m", "uadnet.cli.demo", "--disable_progress_bar", *args.demo_args],
                                stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy())
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.5)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"uadnet_demo failed with exit code {proc.returncode}; see {log}")
    summary_file = next((root / "results").glob("Dataset*_DemoBrain/demo/*/predictions/summary.json"))
    s = json.loads(summary_file.read_text(encoding="utf-8"))
    pooled, case = s["pooled"], s.get("case_level") or {}
    training_log = next((root / "results").glob("Dataset*_DemoBrain/*__uadnet_plans__2d/fold_0/training_log.txt"))
    log_text = training_log.read_text(encoding="utf-8")
    iterations = re.findall(r"finished at iteration (\d+)", log_text)
    best = re.findall(r"best validation AP ([0-9.]+)", log_text)
    trained = (f"{iterations[-1]} iterations, best validation AP {float(best[-1]):.3f}" if iterations and best
               else "?")
    extra = "".join(" " + a for a in args.demo_args)
    text = "\n".join([
        "## `uadnet_demo` end to end",
        "",
        (f"`uadnet_demo{extra}` with its defaults, from an empty folder on {platform.machine()} CPU {cpu_label()}, "
         f"{len(os.sched_getaffinity(0))} cores: builds the demo dataset, plans, preprocesses, trains `cold_ensemble` "
         "2d fold 0 for the default budget, predicts the 20 test brains, evaluates and draws the overlays."),
        "",
        ("| wall time | peak memory (whole process tree) | training | test pooled AP | best Dice | Dice @1 % FPR "
         "| voxel AUROC | case AUROC |"),
        "|---|---|---|---|---|---|---|---|",
        (f"| {wall / 60:.1f} min | {peak / 1024:.2f} GB | {trained} | "
         f"**{pooled['ap']:.3f}** | {pooled['best_dice']:.3f} | {pooled.get('dice_at_threshold') or float('nan'):.3f} "
         f"| {pooled['auroc']:.3f} | {case.get('auroc') if case.get('auroc') is None else round(case['auroc'], 3)} |"),
        "",
        "Targets: ≤ 35 min, ≤ 6 GB. One run.",
        "",
        (f"Reproduce: `python benchmarks/demo_end_to_end.py --root /tmp/uadnet_demo_bench --write"
         f"{' --' + extra if extra else ''}`"),
    ])
    print(text)
    if args.write:
        write_section("demo_end_to_end", text)


if __name__ == "__main__":
    main()
