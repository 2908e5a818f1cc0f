"""Dataset fingerprint: geometry, foreground and intensity statistics of the healthy training cases.

Written to ``dataset_fingerprint.json``; the planner reads nothing else. Intensity statistics use up to
``num_samples`` foreground voxels per case and channel (seeded), so memory stays bounded for large cohorts;
min/max/mean/std are exact.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import get_bbox_from_mask
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from uadnet.dataset.raw_dataset import RawDataset
from uadnet.imageio import DUMMY_SLICE_SPACING, reader_writer_class, require_finite
from uadnet.plans import ForegroundPlan, NormalizationPlan
from uadnet.preprocessing.foreground import choose_foreground_method, compute_foreground, zero_fraction
from uadnet.preprocessing.normalization import apply_normalization, normalization_range, normalization_scheme_for
from uadnet.utilities.parallel import parallel_map

PERCENTILES = (0.5, 2.0, 98.0, 99.5)
CODEBOOK_SAMPLES = 50_000
HISTOGRAM_BINS = 64  # of the normalised foreground intensities, over [0, 1]


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
        for scheme in ("percentile", "rgb"):
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


def intensity_codebook(values: np.ndarray, size: int | str = 5, seed: int = 0) -> list[float]:
    """Sorted k-means centroids of 1D normalised intensities. ``size="auto"`` picks k in 2..8 by silhouette;
    k never exceeds the number of distinct values."""
    values = np.asarray(values, np.float64).reshape(-1, 1)
    distinct = len(np.unique(values))
    if distinct <= 1:
        return [float(values[0, 0])] if values.size else []
    if size == "auto":
        candidates = range(2, min(8, distinct) + 1)
        sub = values[np.random.default_rng(seed).permutation(len(values))[:5000]]
        scores = {k: silhouette_score(sub, KMeans(k, n_init=3, random_state=seed).fit_predict(sub))
                  for k in candidates if len(np.unique(sub)) > k}
        k = max(scores, key=scores.get) if scores else 2
    else:
        k = min(int(size), distinct)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(values)
    return sorted(float(c) for c in km.cluster_centers_.ravel())


def aggregate_fingerprint(cases: list[dict[str, Any]], dataset_name: str, channel_names: dict[str, str],
                          file_ending: str, codebook_size: int | str = 5, seed: int = 0) -> dict[str, Any]:
    """Combine per-case fingerprints into the dataset fingerprint (a pure function)."""
    spacings = np.array([c["spacing"] for c in cases])
    intensity, codebooks = {}, {}
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
        scheme = normalization_scheme_for(name, file_ending, stats["max"])
        if scheme == "ct":
            plan = NormalizationPlan(name, scheme, low=stats["percentile_00_5"], high=stats["percentile_99_5"])
            normalized = apply_normalization(samples, plan.low, plan.high, True)
        else:
            normalized = np.concatenate([np.asarray(p["normalized_samples"][scheme]) for p in per])
        if len(normalized) > CODEBOOK_SAMPLES:
            normalized = np.random.default_rng(seed).choice(normalized, CODEBOOK_SAMPLES, replace=False)
        codebooks[ch] = {"normalization": scheme, "centroids": intensity_codebook(normalized, codebook_size, seed),
                         "histogram": np.histogram(normalized, HISTOGRAM_BINS, (0.0, 1.0))[0].tolist()}
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
        "intensity_codebook": codebooks,
        "cases": stripped,
    }


def extract_fingerprint(dataset: RawDataset, num_processes: int = 1, num_samples: int = 10_000,
                        codebook_size: int | str = 5, seed: int = 0,
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
    return aggregate_fingerprint(results, dataset.name, dataset.channel_names, dataset.file_ending, codebook_size,
                                 seed)
