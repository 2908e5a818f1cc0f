"""Build ``DatasetXXX_DemoBrain``: healthy T1 + FLAIR-like brains for training, lesioned and healthy test cases.

Every case is the MNI152 template under a random small affine + elastic deformation, with its own contrast
(gamma, tissue levels), a smooth bias field and Rician noise. Background stays exactly 0 (skull-stripped).
Test cases get a tumour-like lesion, white-matter hyperintensities or an infarct-like wedge (see
``uadnet.demo.lesions``), or stay healthy (every fourth case). Deterministic under ``seed``; resumable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from uadnet.dataset.dataset_json import generate_dataset_json
from uadnet.demo.anatomy import bias_field, load_template, random_deformation, warp
from uadnet.demo.lesions import GENERATORS
from uadnet.imageio import SimpleITKIO
from uadnet.paths import make_dataset_name
from uadnet.utilities.file_io import load_json, save_json
from uadnet.utilities.parallel import parallel_map

CHANNELS = ("T1", "FLAIR")
KINDS = ("tumour", "wmh", "infarct")  # names of GENERATORS' lesions, as recorded in dataset.json
HEALTHY_TEST_EVERY = 4  # every 4th test case stays healthy
BUILD_RECORD = ".demo_build.json"  # parameters of the build in this folder, written first (dataset.json: last)


def _case_files(folder: Path, split: str, identifier: str) -> list[Path]:
    files = [folder / f"images{split}" / f"{identifier}_{c:04d}.nii.gz" for c in range(len(CHANNELS))]
    extra = folder / ("masksTr" if split == "Tr" else "labelsTs") / f"{identifier}.nii.gz"
    return [*files, extra]


def synthesize_case(resolution_mm: float, seed: int, split: str, index: int, lesion: int | None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, str]:
    """One case: ``({"T1": (z, y, x), "FLAIR": ...}, brain mask, label, lesion kind)``; pure in its arguments."""
    tpl = load_template(resolution_mm)
    rng = np.random.default_rng([seed, 0 if split == "Tr" else 1, index])
    coords = random_deformation(tpl.t1.shape, tpl.spacing, rng)
    t1, gm, wm = warp(tpl.t1, coords), warp(tpl.gm, coords), warp(tpl.wm, coords)
    mask = warp(tpl.mask.astype(np.float32), coords) > 0.5
    csf = np.clip(mask - gm - wm, 0, 1)
    t1 = np.clip(t1, 0, None) ** rng.uniform(0.85, 1.15)
    flair = csf * rng.uniform(0.08, 0.15) + wm * rng.uniform(0.40, 0.48) + gm * rng.uniform(0.58, 0.68)
    images = {"T1": t1, "FLAIR": flair}
    white = wm > 0.8
    noise_sd = {k: rng.uniform(0.015, 0.03) * (float(np.median(v[white])) if white.any() else 0.5)
                for k, v in images.items()}  # a few % of the white-matter level, fixed before any lesion
    label = np.zeros(mask.shape, bool)
    kind = "healthy"
    if lesion is not None:
        lesion_rng = np.random.default_rng([seed, 2, index])  # own stream: anatomy and noise match the healthy case
        found = GENERATORS[lesion](mask, gm, wm, tpl.spacing, lesion_rng)
        kind = found.kind
        if found.displacement is not None:  # mass effect: tissue pushed away from the tumour
            grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in mask.shape], indexing="ij"))
            images = {k: warp(v, grid + found.displacement) for k, v in images.items()}
        images = {k: v * found.factors[k] for k, v in images.items()}
        label = found.label
    field = bias_field(mask.shape, rng, rng.uniform(0.08, 0.15))
    out = {}
    for name, img in images.items():
        sigma = noise_sd[name]
        noisy = np.sqrt((img * field + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2)
        out[name] = np.where(mask, noisy * 1000, 0).astype(np.float32)  # Rician noise, background exactly 0
    return out, mask, label & mask, kind


def _build_case(task: dict[str, Any]) -> str:
    folder = Path(task["folder"])
    files = _case_files(folder, task["split"], task["identifier"])
    if all(f.is_file() for f in files):
        return task["kind_hint"]
    images, mask, label, kind = synthesize_case(task["resolution"], task["seed"], task["split"], task["index"],
                                                task["lesion"])
    tpl = load_template(task["resolution"])
    props = {"sitk": {"dimension": 3, "size": list(mask.shape[::-1]), "spacing": [tpl.spacing] * 3,
                      "origin": list(tpl.origin), "direction": list(tpl.direction)}}
    writer = SimpleITKIO()
    for name, f in zip(CHANNELS, files):
        writer.write(images[name], f, props)
    writer.write((mask if task["split"] == "Tr" else label).astype(np.uint8), files[-1], props)
    return kind


def _prepare_folder(folder: Path, n_train: int, n_test: int, resolution_mm: float, seed: int) -> None:
    """Refuse to mix builds with other parameters; drop cases beyond ``n_train``/``n_test`` of an earlier build."""
    record = folder / BUILD_RECORD
    params = {"resolution_mm": float(resolution_mm), "seed": int(seed)}
    if record.is_file() and load_json(record) != params:
        raise ValueError(f"{folder} holds a demo build with {load_json(record)}, not {params}. Delete the folder, "
                         "or choose another --id/--name.")
    for sub in ("imagesTr", "masksTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    save_json(params, record)
    for sub, prefix, n in (("imagesTr", "demo", n_train), ("masksTr", "demo", n_train), ("imagesTs", "test", n_test),
                           ("labelsTs", "test", n_test)):
        for f in (folder / sub).iterdir():
            m = re.match(rf"{prefix}_(\d{{3}})(_\d{{4}})?\.nii\.gz$", f.name)
            if m and int(m.group(1)) >= n:
                f.unlink()


def make_demo_dataset(output_root: str | os.PathLike, n_train: int = 40, n_test: int = 20,
                      resolution_mm: float = 2.0, seed: int = 0, dataset_id: int = 990, name: str = "DemoBrain",
                      num_processes: int = 1, disable_progress_bar: bool = False) -> Path:
    """Write the demo dataset into ``output_root/DatasetXXX_<name>`` and return that folder.

    ``resolution_mm``: isotropic spacing in mm. ``dataset.json`` is written last, so a complete dataset is
    recognisable; re-running skips finished cases (a build with another seed or resolution in the same folder is
    refused; cases beyond ``n_train``/``n_test`` left by an earlier, larger build are deleted).
    """
    if n_train < 1 or n_test < 0 or resolution_mm <= 0:
        raise ValueError(f"need n_train >= 1, n_test >= 0, resolution_mm > 0; got {n_train}, {n_test}, "
                         f"{resolution_mm}")
    folder = Path(output_root) / make_dataset_name(dataset_id, name)
    _prepare_folder(folder, n_train, n_test, resolution_mm, seed)
    tasks = [{"folder": str(folder), "split": "Tr", "identifier": f"demo_{i:03d}", "index": i, "lesion": None,
              "seed": seed, "resolution": resolution_mm, "kind_hint": "healthy"} for i in range(n_train)]
    for i in range(n_test):
        lesion = None if i % HEALTHY_TEST_EVERY == HEALTHY_TEST_EVERY - 1 else i % len(GENERATORS)
        kind = "healthy" if lesion is None else KINDS[lesion]
        tasks.append({"folder": str(folder), "split": "Ts", "identifier": f"test_{i:03d}", "index": i,
                      "lesion": lesion, "seed": seed, "resolution": resolution_mm, "kind_hint": kind})
    kinds = parallel_map(_build_case, tasks, num_processes, "demo cases", names=[t["identifier"] for t in tasks],
                         disable_progress_bar=disable_progress_bar)
    test_kinds = {t["identifier"]: k for t, k in zip(tasks, kinds) if t["split"] == "Ts"}
    generate_dataset_json(folder, dict(enumerate(CHANNELS)), ".nii.gz", n_train, dataset_name=name,
                          description=f"uadnet demo: MNI152 template anatomy at {resolution_mm:g} mm, seed {seed}",
                          test_case_lesions=test_kinds)
    return folder
