"""Benchmark: fingerprint + preprocessing of brain-sized volumes on this machine.

    python benchmarks/preprocessing_speed.py [--n_cases 20] [--repeats 3] [-np 2] [--write]

Builds ``n_cases`` healthy 1 mm brains from the demo builder (MNI152 anatomy, 2 channels) in a temporary
folder, then times, ``repeats`` times each, the fingerprint and the 2D + 3D preprocessing (the work of
``uadnet_plan_and_preprocess``). Reports medians, seconds per case and the speed-up of ``-np`` workers over
one; ``--write`` puts the table into ``documentation/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label

DOC = Path(__file__).resolve().parents[1] / "documentation" / "benchmarks.md"
START, END = "<!-- preprocessing:start -->", "<!-- preprocessing:end -->"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(n_cases: int, repeats: int, num_processes: int) -> dict:
    from uadnet.dataset.raw_dataset import RawDataset
    from uadnet.demo.builder import make_demo_dataset
    from uadnet.planning.fingerprint import extract_fingerprint
    from uadnet.planning.hardware import detect_hardware
    from uadnet.planning.plan_and_preprocess import plan_and_preprocess_dataset

    root = Path(tempfile.mkdtemp(prefix="uadnet_bench_"))
    try:
        for kind in ("raw", "preprocessed", "results"):
            (root / kind).mkdir()
            os.environ[f"UADNET_{kind.upper()}"] = str(root / kind)
        t_build = timed(lambda: make_demo_dataset(root / "raw", n_train=n_cases, n_test=0, resolution_mm=1.0,
                                                  dataset_id=991, name="Bench1mm", num_processes=num_processes))
        folder = next((root / "raw").iterdir())
        ds = RawDataset(folder)
        hardware = detect_hardware("cpu")
        rows = {}
        for np_ in sorted({1, num_processes}):
            fp = [timed(lambda n=np_: extract_fingerprint(ds, n, disable_progress_bar=True)) for _ in range(repeats)]
            pp = []
            for _ in range(repeats):
                shutil.rmtree(root / "preprocessed", ignore_errors=True)
                (root / "preprocessed").mkdir()
                pp.append(timed(lambda n=np_: plan_and_preprocess_dataset(
                    folder.name, None, n, hardware, disable_progress_bar=True, verbose=False)))
            rows[np_] = {"fingerprint": statistics.median(fp), "all": statistics.median(pp)}
        shape = next(iter(ds.training_cases().values()))
        from uadnet.imageio import reader_writer_for
        image, _ = reader_writer_for(ds.file_ending).read_images(shape.images)
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        return {"rows": rows, "n_cases": n_cases, "repeats": repeats, "shape": list(image.shape),
                "build_s": t_build, "peak_mb": peak_mb, "hardware": hardware.to_dict(),
                "cpu": f"{platform.machine()} CPU {cpu_label()}"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def to_markdown(r: dict, num_processes: int) -> str:
    c, z, y, x = r["shape"]
    lines = [
        START,
        "## Fingerprint + preprocessing (`uadnet_plan_and_preprocess`)",
        "",
        (f"{r['n_cases']} healthy demo brains at 1 mm ({c} channels, {z}x{y}x{x} voxels, as built by "
        f"`uadnet_make_demo_dataset --resolution 1`), {r['cpu']}, "
        f"{r['hardware']['num_cpus']} cores. Medians of {r['repeats']} runs. \"All\" = fingerprint + plans + "
        "preprocessing of every planned configuration (2d and 3d) + splits, from an empty preprocessed folder."),
        "",
        "| workers (`-np`) | fingerprint (s) | all (s) | all per case (s) |",
        "|---|---|---|---|",
    ]
    for np_, row in sorted(r["rows"].items()):
        lines.append(f"| {np_} | {row['fingerprint']:.1f} | {row['all']:.1f} | {row['all'] / r['n_cases']:.2f} |")
    if num_processes in r["rows"] and 1 in r["rows"] and num_processes != 1:
        ratio = r["rows"][1]["all"] / r["rows"][num_processes]["all"]
        lines += ["", (f"Speed-up of {num_processes} workers over 1: {ratio:.2f}x. Each stage (fingerprint, 2d, 3d) "
                      "starts its spawned workers anew, and each worker imports torch (through acvl-utils) and "
                      "scikit-learn, about 2-3 s; at this size that fixed cost is a large share of the run. Peak "
                      f"resident memory of the benchmark process (builder included): {r['peak_mb']:.0f} MB.")]
    lines += ["", (f"Reproduce: `python benchmarks/preprocessing_speed.py --n_cases {r['n_cases']} --repeats "
                  f"{r['repeats']} -np {num_processes} --write`"), END]
    return "\n".join(lines)


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.is_file() else "# Benchmarks\n\nMeasured on the project's CPU machines.\n"
    if START in doc:
        doc = doc[: doc.index(START)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_cases", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("-np", "--num_processes", type=int, default=2)
    p.add_argument("--write", action="store_true", help="update documentation/benchmarks.md")
    args = p.parse_args()
    result = run(args.n_cases, args.repeats, args.num_processes)
    text = to_markdown(result, args.num_processes)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
