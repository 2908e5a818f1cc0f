"""Benchmark: samples per second of each corruption family on one core, against one training step.

    python benchmarks/corruption_throughput.py [--repeats 5] [--batch 32] [--write]

For 2D 128² and 3D 64³ single-channel samples (a smooth random "anatomy" inside an ellipsoid foreground,
codebook from the demo plans' defaults) it times every registered family, one sample at a time on one thread
(the data-loader workers run them), and compares the cost of corrupting a whole batch with one fp32 training
step (forward + backward + AdamW) of a stand-in UNet of the planner's CPU topology on that batch (the real
restorer arrives with the trainer). Medians of ``repeats`` runs.
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
from _common import cpu_label

DOC = Path(__file__).resolve().parents[1] / "documentation" / "benchmarks.md"
START, END = "<!-- corruption:start -->", "<!-- corruption:end -->"


def fake_sample(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    grid = np.meshgrid(*[np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in shape], indexing="ij")
    fg = sum(g ** 2 for g in grid) < 0.8
    img = ndimage.gaussian_filter(rng.random(shape), 3)
    img = (img - img.min()) / (np.ptp(img) + 1e-8) * fg
    return img[None].astype(np.float32), fg


def stand_in_unet(dim: int, features: list[int]):
    import torch
    from torch import nn

    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    up = nn.ConvTranspose2d if dim == 2 else nn.ConvTranspose3d
    pool = nn.MaxPool2d(2) if dim == 2 else nn.MaxPool3d(2)

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(conv(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                             conv(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList(block(a, b) for a, b in zip([1, *features[:-1]], features))
            self.up = nn.ModuleList(up(features[i], features[i - 1], 2, 2) for i in range(len(features) - 1, 0, -1))
            self.dec = nn.ModuleList(block(2 * features[i - 1], features[i - 1]) for i in range(len(features) - 1, 0, -1))
            self.out = conv(features[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, e in enumerate(self.enc):
                x = e(x)
                skips.append(x)
                if i < len(self.enc) - 1:
                    x = pool(x)
            for u, d, s in zip(self.up, self.dec, skips[-2::-1]):
                x = d(torch.cat([u(x), s], 1))
            return self.out(x)

    return UNet()


def time_training_step(dim: int, patch: tuple[int, ...], batch: int, repeats: int) -> float:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    net = stand_in_unet(dim, [16, 32, 64, 128, 128])
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randn(batch, 1, *patch)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        loss = (net(x) - x).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=32, help="2D batch (3D uses 2)")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    from threadpoolctl import threadpool_limits

    from uadnet.corruption.registry import CORRUPTIONS
    from uadnet.plans import CorruptionPlan, MethodsPlan

    class _Plans:  # the fields the families read from the plans
        corruption = CorruptionPlan(shape_size_mm=[10.0, 44.0],
                                    intensity_codebook=[[0.1, 0.3, 0.5, 0.7, 0.9]])
        methods = MethodsPlan()

    rows = []
    for dim, shape, batch in ((2, (1, 128, 128), args.batch), (3, (64, 64, 64), 2)):
        rng = np.random.default_rng(0)
        samples = [fake_sample(shape, rng) for _ in range(8)]
        step = time_training_step(dim, shape[1:] if dim == 2 else shape, batch, args.repeats)
        for name, cls in sorted(CORRUPTIONS.items()):
            family = cls.from_plans(_Plans())
            per_run = []
            with threadpool_limits(1):
                for r in range(args.repeats):
                    t = time.perf_counter()
                    for k, (img, fg) in enumerate(samples):
                        family(img, fg, np.random.default_rng([r, k]), (1.0, 1.0, 1.0))
                    per_run.append((time.perf_counter() - t) / len(samples))
            sec = statistics.median(per_run)
            rows.append((dim, name, 1 / sec, sec * batch, step, batch))
    lines = [START, "## Corruption throughput (one core) vs one training step (two cores)", "",
             (f"{platform.machine()} CPU {cpu_label()}: the families on 1 thread, the training step on 2 threads. "
             f"Medians of {args.repeats} runs. A batch is {args.batch} 2D samples of 128² or 2 3D samples of 64³; "
             "\"step\" is one fp32 forward + backward + AdamW step of a stand-in UNet with the planner's CPU widths "
             "(16-32-64-128-128) on that batch."), "",
             "| dim | family | samples/s (1 core) | corrupting a batch (s) | training step (s) | ratio |",
             "|---|---|---|---|---|---|"]
    for dim, name, sps, batch_s, step, _ in rows:
        lines.append(f"| {dim}D | `{name}` | {sps:.1f} | {batch_s:.3f} | {step:.3f} | {batch_s / step:.2f} |")
    lines += ["", (f"Reproduce: `python benchmarks/corruption_throughput.py --repeats {args.repeats} --batch "
                   f"{args.batch} --write`"), END]
    text = "\n".join(lines)
    print(text)
    if args.write:
        doc = DOC.read_text() if DOC.is_file() else "# Benchmarks\n"
        doc = (doc[: doc.index(START)] + text + doc[doc.index(END) + len(END):] if START in doc
               else doc.rstrip() + "\n\n" + text + "\n")
        DOC.write_text(doc)


if __name__ == "__main__":
    main()
