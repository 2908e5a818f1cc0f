"""Shared by the benchmark scripts: temporary uadnet folders, the demo dataset, markdown sections."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "documentation" / "benchmarks.md"


def use_root(root: Path) -> None:
    """Point UADNET_RAW/PREPROCESSED/RESULTS into ``root``."""
    for var, sub in (("UADNET_RAW", "raw"), ("UADNET_PREPROCESSED", "preprocessed"), ("UADNET_RESULTS", "results")):
        os.environ[var] = str(root / sub)
        (root / sub).mkdir(parents=True, exist_ok=True)


def demo_plans(root: Path, resolution: float = 2.0, n_train: int = 40, dataset_id: int = 990):
    """Build (if needed) and plan the demo dataset at ``resolution`` mm; returns (plans, preprocessed folder)."""
    from uadnet.cli.make_demo_dataset import main as make_demo
    from uadnet.cli.plan_and_preprocess import main as plan
    from uadnet.plans import PLANS_FILE, Plans

    use_root(root)
    name = f"Dataset{dataset_id:03d}_DemoBrain"
    if not (root / "raw" / name / "dataset.json").is_file():
        assert make_demo(["--id", str(dataset_id), "--resolution", str(resolution), "--n_train", str(n_train),
                          "--n_test", "4", "--disable_progress_bar"]) == 0
    assert plan(["-d", str(dataset_id), "--disable_progress_bar"]) == 0
    folder = root / "preprocessed" / name
    return Plans.load(folder / PLANS_FILE), folder


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_of_runs(command: list[str], repeats: int, keys: tuple[str, ...]) -> tuple[dict, dict]:
    """Run ``command`` (which prints one JSON object as its last line) ``repeats`` times in fresh processes;
    returns (median of each of ``keys``, the first run's full result)."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in keys}, runs[0]


def write_section(name: str, text: str) -> None:
    """Replace (or append) the block between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = DOC.read_text()
    block = f"{start}\n{text.strip()}\n{end}"
    if start in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def trained_iterations(fold_folder: Path) -> int:
    """Iterations the fold's final checkpoint was trained for."""
    import torch

    return int(torch.load(fold_folder / "checkpoint_final.pth", map_location="cpu", weights_only=True)["iteration"])


def cpu_label() -> str:
    """``"<model> (<flags>)"`` with the flags that decide training speed (avx2, avx512_bf16, amx_bf16)."""
    from uadnet.planning.hardware import _cpu_flags, _cpu_model

    return f"{_cpu_model()} ({', '.join(sorted(_cpu_flags() & {'avx2', 'avx512_bf16', 'amx_bf16'}))})"
