"""Tiny synthetic datasets made inside the tests (no downloads): ellipsoid "organs" with tissue classes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import skimage.io

from uadnet.dataset.dataset_json import generate_dataset_json

UADNET_VARS = ("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS")


@contextmanager
def uadnet_folders(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[dict[str, Path]]:
    """For module-scoped fixtures: three fresh uadnet folders in a new temporary directory ``name``, with the
    environment variables pointing at them while the context is open; yields ``{variable: folder}``."""
    root = tmp_path_factory.mktemp(name)
    folders = {v: root / v for v in UADNET_VARS}
    with pytest.MonkeyPatch.context() as mp:
        for var, f in folders.items():
            f.mkdir()
            mp.setenv(var, str(f))
        yield folders


def phantom(shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float], rng: np.random.Generator,
            radius_mm: float = 20.0) -> np.ndarray:
    """An ellipsoid of radius ``radius_mm`` (jittered) on a zero background, with an inner brighter core."""
    zz, yy, xx = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape_zyx, spacing_zyx)],
                             indexing="ij")
    r = radius_mm * rng.uniform(0.85, 1.0, size=3)
    if shape_zyx[0] == 1:
        r[0] = np.inf
    d = np.sqrt((zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2)
    img = np.zeros(shape_zyx, np.float32)
    img[d < 1] = 100 + 10 * rng.standard_normal(int((d < 1).sum()))
    img[d < 0.5] += 80
    return img


def write_sitk(array_zyx: np.ndarray, path: Path, spacing_zyx, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def make_dataset(root: Path, dataset_id: int = 1, kind: str = "3d_iso", n_cases: int = 4, n_test: int = 0,
                 seed: int = 0) -> Path:
    """Write ``root/DatasetXXX_<kind>`` and return its folder.

    kinds: ``3d_iso`` (1 mm, 24x32x28), ``3d_aniso`` (5x0.8x0.8 mm, 8x48x48), ``2ch`` (two channels, 3d_iso
    grid, rotated direction), ``2d_png`` (48x40 grey PNG), ``rgb_png`` (RGB PNG).
    """
    rng = np.random.default_rng(seed)
    folder = root / f"Dataset{dataset_id:03d}_{kind}"
    (folder / "imagesTr").mkdir(parents=True)
    png = kind.endswith("png")
    ending = ".png" if png else ".nii.gz"
    if kind == "3d_aniso":
        shape, spacing = (8, 48, 48), (5.0, 0.8, 0.8)
    elif png:
        shape, spacing = (1, 48, 40), (1.0, 1.0, 1.0)
    else:
        shape, spacing = (24, 32, 28), (1.0, 1.0, 1.0)
    n_ch = 2 if kind == "2ch" else (3 if kind == "rgb_png" else 1)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0) if kind == "2ch" else None
    radius = 15.0 if png else (12.0 if kind != "3d_aniso" else 15.0)

    def write_case(subdir: str, name: str) -> np.ndarray:
        img = phantom(shape, spacing, rng, radius)
        if png:
            arr = np.clip(img[0], 0, 255).astype(np.uint8)
            if n_ch == 3:
                arr = np.stack([arr, (arr * 0.8).astype(np.uint8), (arr * 0.5).astype(np.uint8)], -1)
            skimage.io.imsave(str(folder / subdir / f"{name}_0000.png"), arr, check_contrast=False)
        else:
            for c in range(n_ch):
                write_sitk(img * (1 + c), folder / subdir / f"{name}_{c:04d}.nii.gz", spacing,
                           origin=(10.0, -5.0, 3.0), direction=direction)
        return img

    for i in range(n_cases):
        write_case("imagesTr", f"case_{i:03d}")
    if n_test:
        (folder / "imagesTs").mkdir()
        (folder / "labelsTs").mkdir()
        for i in range(n_test):
            img = write_case("imagesTs", f"test_{i:03d}")
            label = np.zeros(shape, np.uint8)
            label[tuple(s // 2 for s in shape)] = 1
            if png:
                skimage.io.imsave(str(folder / "labelsTs" / f"test_{i:03d}.png"), label[0] * 255, check_contrast=False)
            else:
                write_sitk(label, folder / "labelsTs" / f"test_{i:03d}.nii.gz", spacing, origin=(10.0, -5.0, 3.0),
                           direction=direction)
            del img
    names = {"rgb_png": {0: "R", 1: "G", 2: "B"}, "2ch": {0: "T1", 1: "T2"}}.get(kind, {0: "MRI"})
    generate_dataset_json(folder, names, ending, n_cases)
    return folder
