"""Development datasets: built *differently* from the demo, for choosing defaults without looking at the demo test.

``dev_brain`` (``Dataset991_DevBrainT2``): one T2-like channel (CSF bright, white matter dark — the demo is T1 +
FLAIR), stored so that the slice axis is **coronal** (the demo's is axial), a population with stronger shape and
contrast variation, and test lesions of three kinds, hyper- *and* hypointense, none imitating a training
corruption: ``small`` (2–8 spots of 3–5 mm diameter), ``subtle`` (one irregular 10–25 mm region whose intensity
changes by only 10–20 %) and ``large`` (an irregular 20–40 mm region, ±35–60 %, with a smooth edge). Every fourth
test case is healthy.

``dev_photo`` (``Dataset992_DevRetina2D``): 256² RGB fundus photographs made from scikit-image's retina image
(random rotation, scale, shift, mirroring, colour gains, gamma, uneven illumination, noise), written as three grey
PNG channel files per case (``_0000`` R, ``_0001`` G, ``_0002`` B); test lesions ``small`` (3–10 dark red dots of
3–8 px), ``exudate`` (2–6 bright yellow blobs of 8–20 px) and ``subtle`` (one 30–70 px region with a 10–20 %
colour change), every fourth case healthy.

Both record the lesion kind of every test case in ``dataset.json`` (``test_case_lesions``), which
``uadnet_evaluate --groups`` reads. Deterministic under ``seed``; re-running skips finished cases.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from uadnet.dataset.dataset_json import generate_dataset_json
from uadnet.demo.anatomy import bias_field, load_template, random_deformation, warp
from uadnet.paths import make_dataset_name
from uadnet.utilities.parallel import parallel_map

BRAIN_KINDS = ("small", "subtle", "large")
PHOTO_KINDS = ("small", "exudate", "subtle")
HEALTHY_EVERY = 4
PHOTO_SIZE = 256


def _kind_of(index: int, kinds: tuple[str, ...]) -> str:
    if index % HEALTHY_EVERY == HEALTHY_EVERY - 1:
        return "healthy"
    return kinds[(index - index // HEALTHY_EVERY) % len(kinds)]


def _blobs(shape: tuple[int, ...], where: np.ndarray, count: int, diameter: tuple[float, float], spacing: float,
           rng: np.random.Generator, roughness: float = 0.25) -> np.ndarray:
    """``count`` irregular blobs (diameters in mm, drawn uniformly) centred on random voxels of ``where``."""
    out = np.zeros(shape, bool)
    idx = np.argwhere(where)
    if len(idx) == 0:
        return out
    for _ in range(count):
        c = idx[rng.integers(len(idx))]
        r = rng.uniform(*diameter) / 2.0 / spacing  # voxels
        half = int(np.ceil(r * (1 + roughness))) + 2
        lo, hi = np.maximum(c - half, 0), np.minimum(c + half + 1, shape)
        grid = np.meshgrid(*[np.arange(a, b) - cc for a, b, cc in zip(lo, hi, c)], indexing="ij")
        d = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grid)) / max(r, 0.5)
        noise = rng.standard_normal(d.shape).astype(np.float32)
        noise = ndimage.gaussian_filter(noise, max(r / 2, 0.7))
        noise /= noise.std() + 1e-6
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        out[box] |= d + roughness * noise < 1.0
    return out & where


# ------------------------------------------------------------------------------------------------- brain
def synthesize_brain(seed: int, split: str, index: int, kind: str, resolution_mm: float = 2.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One T2-like case ``(image, brain mask, label)``, arrays ``(y, z, x)`` of the template (coronal slices
    first); pure in its arguments."""
    tpl = load_template(resolution_mm)
    rng = np.random.default_rng([seed, 10 if split == "Tr" else 11, index])
    coords = random_deformation(tpl.t1.shape, tpl.spacing, rng, rotation_deg=7.0, scale=0.08, shift_mm=4.0,
                                elastic_mm=3.0)
    gm, wm = warp(tpl.gm, coords), warp(tpl.wm, coords)
    mask = warp(tpl.mask.astype(np.float32), coords) > 0.5
    csf = np.clip(mask - gm - wm, 0, 1)
    levels = rng.uniform([0.85, 0.50, 0.30], [1.0, 0.62, 0.40])  # CSF, GM, WM
    t2 = (csf * levels[0] + gm * levels[1] + wm * levels[2]) ** rng.uniform(0.9, 1.1)
    label = np.zeros(mask.shape, bool)
    if kind != "healthy":
        lrng = np.random.default_rng([seed, 12, index])
        tissue = (gm + wm > 0.6) & mask
        sp = tpl.spacing
        if kind == "small":
            label = _blobs(mask.shape, tissue, int(lrng.integers(2, 9)), (3.0, 5.0), sp, lrng, 0.15)
            change = lrng.choice([-1, 1]) * lrng.uniform(0.4, 0.7)
        elif kind == "subtle":
            label = _blobs(mask.shape, tissue, 1, (10.0, 25.0), sp, lrng)
            change = lrng.choice([-1, 1]) * lrng.uniform(0.10, 0.20)
        else:
            label = _blobs(mask.shape, tissue, 1, (20.0, 40.0), sp, lrng, 0.35)
            change = lrng.choice([-1, 1]) * lrng.uniform(0.35, 0.6)
        soft = np.where(label, ndimage.gaussian_filter(label.astype(np.float32), 0.6), 0.0)
        soft = np.clip(soft / max(float(soft.max()), 1e-6) * 1.3, 0, 1)
        t2 = t2 * (1 + change * soft)
    field = bias_field(mask.shape, rng, rng.uniform(0.05, 0.2))
    sigma = rng.uniform(0.01, 0.025)
    noisy = np.sqrt((t2 * field + rng.normal(0, sigma, t2.shape)) ** 2 + rng.normal(0, sigma, t2.shape) ** 2)
    image = np.where(mask, noisy * 1000, 0).astype(np.float32)
    order = (1, 0, 2)  # (z, y, x) → (y, z, x): coronal slices along the first array axis
    return image.transpose(order), mask.transpose(order), (label & mask).transpose(order)


def _build_brain_case(task: dict[str, Any]) -> str:
    from uadnet.imageio import SimpleITKIO

    folder, split, ident = Path(task["folder"]), task["split"], task["identifier"]
    image_file = folder / f"images{split}" / f"{ident}_0000.nii.gz"
    extra = folder / ("masksTr" if split == "Tr" else "labelsTs") / f"{ident}.nii.gz"
    if image_file.is_file() and extra.is_file():
        return task["kind"]
    image, mask, label = synthesize_brain(task["seed"], split, task["index"], task["kind"], task["resolution"])
    sp = float(task["resolution"])
    props = {"sitk": {"dimension": 3, "size": list(image.shape[::-1]), "spacing": [sp] * 3,
                      "origin": [0.0, 0.0, 0.0], "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}}
    writer = SimpleITKIO()
    writer.write((mask if split == "Tr" else label).astype(np.uint8), extra, props)
    writer.write(image, image_file, props)  # the image last: its presence marks a finished case
    return task["kind"]


# ------------------------------------------------------------------------------------------------- photo
def _retina() -> np.ndarray:
    import skimage.data

    return skimage.data.retina().astype(np.float32) / 255.0  # (y, x, 3)


def synthesize_photo(seed: int, split: str, index: int, kind: str, size: int = PHOTO_SIZE
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One RGB fundus photograph ``(image (y, x, 3) uint8, label (y, x) bool)``; pure in its arguments."""
    from skimage.transform import AffineTransform
    from skimage.transform import warp as sk_warp

    src = _retina()
    rng = np.random.default_rng([seed, 20 if split == "Tr" else 21, index])
    scale = src.shape[0] / size / rng.uniform(0.92, 1.08)
    angle = np.deg2rad(rng.uniform(-20, 20))
    centre = np.array(src.shape[:2][::-1]) / 2 + rng.uniform(-25, 25, 2)
    tf = (AffineTransform(translation=-np.array([size, size]) / 2) + AffineTransform(scale=scale, rotation=angle)
          + AffineTransform(translation=centre))
    img = sk_warp(src, tf, output_shape=(size, size), order=1, mode="constant", cval=0.0)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15) * rng.uniform(0.88, 1.12, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    direction = rng.uniform(-1, 1, 2)
    img = img * (1 + 0.15 * (direction[0] * yy + direction[1] * xx))[..., None]
    fov = img.max(-1) > 0.04
    fov = ndimage.binary_opening(fov, iterations=2)
    label = np.zeros((size, size), bool)
    if kind != "healthy":
        lrng = np.random.default_rng([seed, 22, index])
        inner = ndimage.binary_erosion(fov, iterations=12)
        if kind == "small":
            label = _blobs((size, size), inner, int(lrng.integers(3, 11)), (3.0, 8.0), 1.0, lrng, 0.15)
            colour = np.array([0.55, 0.35, 0.4])  # dark red
        elif kind == "exudate":
            label = _blobs((size, size), inner, int(lrng.integers(2, 7)), (8.0, 20.0), 1.0, lrng, 0.35)
            colour = np.array([1.45, 1.6, 1.0])  # bright yellow
        else:
            label = _blobs((size, size), inner, 1, (30.0, 70.0), 1.0, lrng, 0.3)
            colour = 1 + lrng.choice([-1, 1]) * lrng.uniform(0.10, 0.20) * lrng.uniform(0.5, 1.0, 3)
        soft = np.where(label, ndimage.gaussian_filter(label.astype(np.float32), 0.8), 0.0)
        soft = np.clip(soft / max(float(soft.max()), 1e-6) * 1.3, 0, 1)[..., None]
        img = img * (1 + (colour - 1) * soft)
    img = img + rng.normal(0, rng.uniform(0.005, 0.015), img.shape)
    img = np.where(fov[..., None], np.clip(img, 1 / 255, 1), 0)
    return np.round(img * 255).astype(np.uint8), label & fov


def _build_photo_case(task: dict[str, Any]) -> str:
    import skimage.io

    from uadnet.utilities.file_io import atomic_path

    folder, split, ident = Path(task["folder"]), task["split"], task["identifier"]
    files = [folder / f"images{split}" / f"{ident}_{c:04d}.png" for c in range(3)]
    label_file = folder / "labelsTs" / f"{ident}.png" if split == "Ts" else None
    if all(f.is_file() for f in files) and (label_file is None or label_file.is_file()):
        return task["kind"]
    image, label = synthesize_photo(task["seed"], split, task["index"], task["kind"])
    outputs = ([(label_file, label.astype(np.uint8))] if label_file else []) + \
              [(f, image[..., c]) for c, f in enumerate(files)]
    for path, array in outputs:
        with atomic_path(path, ".png") as tmp:
            skimage.io.imsave(str(tmp), array, check_contrast=False)
    return task["kind"]


# ------------------------------------------------------------------------------------------------- build
# 96 (24 per kind): with the earlier 24 (the first 24 of these), case AUROC rested on 6 healthy cases and read 0.80
# (brain) and 0.78 (photographs) for models that score 0.58 and 0.70 on 96 (documentation/benchmarks.md)
DEVELOPMENT_TEST_CASES = 96
VARIANTS = {
    "dev_brain": {"id": 991, "name": "DevBrainT2", "kinds": BRAIN_KINDS, "build": _build_brain_case,
                  "channels": {0: "T2"}, "ending": ".nii.gz", "extra": ("masksTr", "labelsTs")},
    "dev_photo": {"id": 992, "name": "DevRetina2D", "kinds": PHOTO_KINDS, "build": _build_photo_case,
                  "channels": {0: "R", 1: "G", 2: "B"}, "ending": ".png", "extra": ("labelsTs",)},
}


def make_development_dataset(variant: str, output_root: str | os.PathLike, n_train: int = 40,
                             n_test: int = DEVELOPMENT_TEST_CASES,
                             seed: int = 0, num_processes: int = 1, disable_progress_bar: bool = False,
                             resolution_mm: float = 2.0) -> Path:
    """Write development dataset ``variant`` (``dev_brain`` or ``dev_photo``) under ``output_root``; returns its
    folder. ``dataset.json`` is written last, so a complete dataset is recognisable."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown development dataset '{variant}'; choose from {sorted(VARIANTS)}")
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    v = VARIANTS[variant]
    folder = Path(output_root) / make_dataset_name(v["id"], v["name"])
    for sub in ("imagesTr", "imagesTs", *v["extra"]):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    tasks = [{"folder": str(folder), "split": "Tr", "identifier": f"dev_{i:03d}", "index": i, "kind": "healthy",
              "seed": seed, "resolution": resolution_mm} for i in range(n_train)]
    tasks += [{"folder": str(folder), "split": "Ts", "identifier": f"test_{i:03d}", "index": i,
               "kind": _kind_of(i, v["kinds"]), "seed": seed, "resolution": resolution_mm} for i in range(n_test)]
    parallel_map(v["build"], tasks, num_processes, f"{variant} cases", names=[t["identifier"] for t in tasks],
                 disable_progress_bar=disable_progress_bar)
    generate_dataset_json(folder, v["channels"], v["ending"], n_train, dataset_name=v["name"],
                          description=f"uadnet development dataset '{variant}', seed {seed} (see "
                                      "uadnet/demo/development.py)",
                          test_case_lesions={t["identifier"]: t["kind"] for t in tasks if t["split"] == "Ts"})
    return folder
