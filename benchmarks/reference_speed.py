"""Benchmark: uadnet against the published DISYRE code (snavalm/disyre) per volume, on the same machine and volume.

    python benchmarks/reference_speed.py --root ROOT --dataset 991 --plans uadnet_plans \\
        --reference /path/to/disyre [--case test_003] [--repeats 3] [--write]

``--reference``: a checkout of https://github.com/snavalm/disyre whose requirements (``diffusers`` 0.27,
``torchmetrics``) are importable (``PYTHONPATH``); nothing of it is part of uadnet. ``ROOT`` holds a trained
single-channel 2D uadnet model (``UADNET_*`` folders under it, fold 0 of ``--plans``) and the dataset's
``imagesTs``. One test volume is scored by both, fp32, in this one process, alternating, median of ``--repeats``:

* the reference: its ``DISYREPipeline`` (``mean-single-step``, K = 4 trailing steps, ``weight_foreground``) with its
  ``UNet2DModel`` of the paper's widths (32, 64, 96, 128, 256, 256; random weights: speed does not depend on
  them), its own sliding window (128² patches, ``overlap`` 0.25 as in its evaluation) over every slice of the
  volume at the dataset's grid, after its normalisation ([0, 98th percentile] → [0, 1]);
* uadnet: ``UadnetPredictor.predict_array`` with fold 0 at fp32 and the torch backend (preprocessing, K = 4
  scoring in one batched pass, postprocessing, export to the input grid).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, trained_iterations, use_root, write_section

REFERENCE_WIDTHS = (32, 64, 96, 128, 256, 256)
REFERENCE_PATCH = (128, 128)
K = 4


def reference_pipeline(reference: Path):
    """The reference's pipeline with its UNet of the paper's widths (random weights) on the CPU, fp32."""
    sys.path.insert(0, str(reference))
    from diffusers import UNet2DModel
    from diffusion.scheduler import DISYREPipeline, DISYREScheduler

    unet = UNet2DModel(sample_size=list(REFERENCE_PATCH), in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=REFERENCE_WIDTHS,
                       down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4).eval()
    return DISYREPipeline(unet, DISYREScheduler())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--dataset", default="991")
    p.add_argument("--plans", default="uadnet_plans")
    p.add_argument("--reference", type=Path, required=True, help="checkout of snavalm/disyre")
    p.add_argument("--case", default="test_003")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    use_root(args.root)
    import torch

    from uadnet import paths
    from uadnet.imageio import SimpleITKIO
    from uadnet.inference.api import UadnetPredictor

    name = paths.resolve_dataset_name(args.dataset)
    image_file = next((paths.raw_folder() / name / "imagesTs").glob(f"{args.case}_0000.*"))
    image, props = SimpleITKIO().read_images([image_file])  # (1, z, y, x)
    model = paths.results_folder() / name / f"cold_ensemble__{args.plans}__2d"
    predictor = UadnetPredictor.from_model_folder(model, folds=[0], device="cpu", precision="fp32")
    volume = image[0].astype(np.float32)
    high = float(np.percentile(volume[volume > 0], 98))
    slices = torch.from_numpy(np.clip(volume / high, 0, 1))[:, None]  # (z, 1, y, x): every slice, the reference's input
    pipe = reference_pipeline(args.reference)
    ref_kwargs = {"method": "mean-single-step", "num_inference_steps": K, "weight_foreground": True,
                  "sw_kwargs": {"overlap": 0.25}}
    times: dict[str, list[float]] = {"reference": [], "uadnet": [], "uadnet scoring": []}
    for _ in range(args.repeats):  # alternated, so both see the same machine state
        t0 = time.perf_counter()
        out = pipe(slices, **ref_kwargs).anomaly_score
        times["reference"].append(time.perf_counter() - t0)
        assert out.shape == slices.shape
        t0 = time.perf_counter()
        result = predictor.predict_array(image, props, with_restoration=False)
        times["uadnet"].append(time.perf_counter() - t0)
        times["uadnet scoring"].append(result.seconds["scoring"])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["reference"] / med["uadnet"]
    shape = list(volume.shape)
    text = "\n".join([
        "## uadnet against the published DISYRE code (`benchmarks/reference_speed.py`)", "",
        (f"One {name} test volume ({args.case}, {shape} voxels (z, y, x) of {list(props['spacing'])} mm), fp32, "
        f"{platform.machine()} CPU {cpu_label()}, {torch.get_num_threads()} threads, one process, the two alternated, "
        f"median of {args.repeats}. Reference: snavalm/disyre's `DISYREPipeline` (`mean-single-step`, K = {K}, its "
        f"UNet of widths {list(REFERENCE_WIDTHS)} with random weights, its sliding window of {list(REFERENCE_PATCH)} "
        f"patches at `overlap` 0.25) over the {shape[0]} slices; uadnet: `UadnetPredictor.predict_array`, fold 0 of "
        f"`{args.plans}` ({trained_iterations(model / 'fold_0')} iterations, K = {K}), torch backend, whole per-case "
        "path (preprocessing, scoring, postprocessing, "
        "export)."), "",
        "| | seconds per volume | reference / this |",
        "|---|---|---|",
        f"| DISYRE reference code | {med['reference']:.2f} | 1.0× |",
        f"| uadnet, end to end | {med['uadnet']:.2f} | **{ratio:.0f}×** |",
        f"| uadnet, scoring only | {med['uadnet scoring']:.2f} | {med['reference'] / med['uadnet scoring']:.0f}× |",
        "",
        (f"Reproduce: `python benchmarks/reference_speed.py --root ROOT --dataset {args.dataset} --plans {args.plans} "
        "--reference DISYRE_CHECKOUT --write` (the reference's requirements on `PYTHONPATH`)")])
    print(text)
    if args.write:
        write_section("reference_speed", text)


if __name__ == "__main__":
    main()
