"""Dataset fingerprint: geometry, foreground and intensity statistics of the healthy training cases.

Written to ``dataset_fingerprint.json``; the planner reads nothing else. The fingerprint holds facts only: every
decision (normalisation scheme, intensity codebook, sizes) is the planner's, so re-planning with other settings
never needs a new fingerprint. Intensity statistics use up to ``num_samples`` foreground voxels per case and
channel (seeded), so memory stays bounded for large cohorts; min/max/mean/std are exact. For each channel the
foreground intensities are also histogrammed as every normalisation scheme would map them
(``normalized_histograms``: ``HISTOGRAM_BINS`` bins over [0, 1], the scheme's range mapped to [0, 1] and clipped).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask

from uadnet.dataset.raw_dataset import RawDataset
from uadnet.imageio import DUMMY_SLICE_SPACING, reader_writer_class, require_finite
from uadnet.plans import ForegroundPlan, NormalizationPlan
from uadnet.preprocessing.foreground import choose_foreground_method, compute_foreground, zero_fraction
from uadnet.preprocessing.normalization import apply_normalization, normalization_range
from uadnet.utilities.parallel import parallel_map

PERCENTILES = (0.5, 2.0, 98.0, 99.5)
HISTOGRAM_BINS = 1024  # of the normalised foreground intensities, over [0, 1]
PER_IMAGE_SCHEMES = ("percentile", "rgb")  # normalised per case; "ct" needs the dataset's percentiles


def _percentile_key(p: float) -> str:
    return f"percentile_{p:04.1f}".replace(".", "_")


def fingerprint_case(task: dict[str, Any]) -> dict[str, Any]:
    """Fingerprint one case (runs in a worker; ``task`` holds only plain data so it pickles under spawn)."""
    reader = reader_writer_class(task["file_ending"], task["reader_override"])()
    image, props = reader.read_images(task["images"])
    require_finite(image, task["images"])
    mask = reader.read_seg(task["mask"])[0] if task["mask"] else None
    spacing = [float(s) for s in props["spacing"]]
    method = choose_foreground_method(ForegroundPlan(), image, mask is not None)
    fg = compute_foreground(image, method, mask)
    bbox = get_bbox_from_mask(fg)
    crop_shape = [int(b - a) for a, b in bbox]
    # a one-voxel axis (2D image, single slice) has no physical extent worth planning with
    extent = [0.0 if s == DUMMY_SLICE_SPACING or n <= 1 else n * s for n, s in zip(crop_shape, spacing)]
    rng = np.random.default_rng([task["seed"], zlib.crc32(task["identifier"].encode())])
    channels = []
    for c, name in enumerate(task["channel_names"]):
        values = image[c][fg].astype(np.float64)
        samples = values if values.size <= task["num_samples"] else rng.choice(values, task["num_samples"], False)
        normalized = {}  # per-image schemes are applied here; CT needs the dataset's percentiles
        for scheme in PER_IMAGE_SCHEMES:
            low, high = normalization_range(NormalizationPlan(channel=name, scheme=scheme), image[c], fg)
            normalized[scheme] = apply_normalization(samples, low, high, True).tolist()
        channels.append({
            "n": int(values.size), "sum": float(values.sum()), "sum_sq": float(np.square(values).sum()),
            "min": float(values.min()), "max": float(values.max()), "samples": samples.tolist(),
            "normalized_samples": normalized,
        })
    return {
        "identifier": task["identifier"],
        "spacing": spacing,
        "shape_before_crop": [int(s) for s in image.shape[1:]],
        "shape_after_crop": crop_shape,
        "foreground_fraction": float(fg.mean()),
        "foreground_extent_mm": extent,
        "foreground_method": method,
        "zero_fraction": zero_fraction(image),
        "channels": channels,
    }


def aggregate_fingerprint(cases: list[dict[str, Any]], dataset_name: str, channel_names: dict[str, str],
                          file_ending: str) -> dict[str, Any]:
    """Combine per-case fingerprints into the dataset fingerprint (a pure function)."""
    spacings = np.array([c["spacing"] for c in cases])
    intensity, histograms = {}, {}
    for ch, name in channel_names.items():
        per = [c["channels"][int(ch)] for c in cases]
        n = sum(p["n"] for p in per)
        mean = sum(p["sum"] for p in per) / n
        var = max(sum(p["sum_sq"] for p in per) / n - mean ** 2, 0.0)
        samples = np.concatenate([np.asarray(p["samples"]) for p in per])
        stats = {"mean": mean, "std": float(np.sqrt(var)), "min": min(p["min"] for p in per),
                 "max": max(p["max"] for p in per)}
        stats.update({_percentile_key(q): float(v) for q, v in zip(PERCENTILES, np.percentile(samples, PERCENTILES))})
        intensity[ch] = stats
        ct = NormalizationPlan(name, "ct", low=stats["percentile_00_5"], high=stats["percentile_99_5"])
        normalized = {"ct": apply_normalization(samples, ct.low, ct.high, True)}
        normalized.update({scheme: np.concatenate([np.asarray(p["normalized_samples"][scheme]) for p in per])
                           for scheme in PER_IMAGE_SCHEMES})
        histograms[ch] = {scheme: np.histogram(v, HISTOGRAM_BINS, (0.0, 1.0))[0].tolist()
                          for scheme, v in sorted(normalized.items())}
    methods = sorted({c["foreground_method"] for c in cases})
    stripped = [{k: v for k, v in c.items() if k != "channels"} for c in cases]
    return {
        "dataset_name": dataset_name,
        "channel_names": channel_names,
        "file_ending": file_ending,
        "num_cases": len(cases),
        "is_2d": bool(all(min(c["shape_before_crop"]) == 1 for c in cases)),
        "median_spacing": np.median(spacings, 0).tolist(),
        "median_shape_after_crop": np.median([c["shape_after_crop"] for c in cases], 0).tolist(),
        "median_foreground_extent_mm": np.median([c["foreground_extent_mm"] for c in cases], 0).tolist(),
        "median_foreground_fraction": float(np.median([c["foreground_fraction"] for c in cases])),
        "foreground_methods": methods,
        "intensity_statistics": intensity,
        "normalized_histograms": histograms,
        "cases": stripped,
    }


def extract_fingerprint(dataset: RawDataset, num_processes: int = 1, num_samples: int = 10_000, seed: int = 0,
                        disable_progress_bar: bool = False) -> dict[str, Any]:
    """Fingerprint every training case of ``dataset`` in ``num_processes`` workers."""
    cases = dataset.training_cases()
    names = [dataset.channel_names[str(i)] for i in range(dataset.num_channels)]
    tasks = [{
        "identifier": ident, "images": [str(p) for p in case.images], "mask": str(case.mask) if case.mask else None,
        "file_ending": dataset.file_ending, "reader_override": dataset.dataset_json.get("overwrite_image_reader_writer"),
        "channel_names": names, "num_samples": num_samples, "seed": seed,
    } for ident, case in cases.items()]
    results = parallel_map(fingerprint_case, tasks, num_processes, "fingerprint", names=list(cases),
                           disable_progress_bar=disable_progress_bar)
    for r in results:
        if len(r["channels"]) != len(names):
            raise ValueError(f"case {r['identifier']} has {len(r['channels'])} channels, dataset.json names "
                             f"{len(names)}. Run with --verify_dataset_integrity for details.")
    return aggregate_fingerprint(results, dataset.name, dataset.channel_names, dataset.file_ending)
