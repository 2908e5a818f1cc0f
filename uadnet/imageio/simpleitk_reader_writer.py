"""SimpleITK for NIfTI, NRRD, MetaImage and DICOM (a single file or a folder holding one series)."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from uadnet.imageio.base_reader_writer import (
    DUMMY_SLICE_SPACING,
    BaseReaderWriter,
    ImageReadError,
    PathLike,
    Properties,
)
from uadnet.imageio.geometry import sitk_geometry_mismatch
from uadnet.utilities.file_io import atomic_path

_NIFTI_ENDINGS = (".nii.gz", ".nii", ".hdr", ".img", ".hdr.gz", ".img.gz")


def _check_nifti_file(path: Path) -> None:
    """Refuse what the NIfTI library would silently get wrong for a ``.nii.gz`` / ``.nii`` file.

    - An ambiguous sibling: asked for ``x.nii.gz``, the library reads ``x.nii`` when both exist, so a stray file
      would replace the image.
    - A truncated file: the library fills missing bytes with zeros. The expected size is the header's
      ``vox_offset`` plus the voxel bytes (``dim`` × ``bitpix``); for gzip files it is compared with the gzip
      trailer (uncompressed size mod 2³²), which a cut-off stream does not end with.
    """
    name = path.name.lower()
    ending = next((e for e in (".nii.gz", ".nii") if name.endswith(e)), None)
    if ending is None:
        return
    stem = path.name[: -len(ending)]
    others = [path.with_name(stem + e) for e in _NIFTI_ENDINGS if e != ending and path.with_name(stem + e).exists()]
    if others:
        raise ImageReadError(f"{path}: ambiguous, {', '.join(o.name for o in others)} lies next to it and the NIfTI "
                             "library may read that file instead. Remove or rename the stray file.")
    gz = ending == ".nii.gz"
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            expected = _nifti_expected_bytes(f.read(540))
    except (OSError, EOFError, zlib.error):
        expected = None
    if expected is None:
        return  # not a header we know (or not gzip at all): SimpleITK decides and says why
    try:
        size = path.stat().st_size
        if gz:
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                size = int.from_bytes(f.read(4), "little")
            if size != expected % 2**32:  # a cut-off stream, or several gzip members: count the bytes
                size = 0
                with gzip.open(path, "rb") as f:
                    while chunk := f.read(1 << 24):
                        size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise ImageReadError(f"{path}: the file is truncated or damaged ({e}). Copy or re-export it again.") from e
    if size < expected:
        raise ImageReadError(f"{path}: the file is truncated (the header announces {expected} bytes, the "
                             f"{'gzip stream holds' if gz else 'file has'} {size}). Copy or re-export it again.")


def _nifti_expected_bytes(header: bytes) -> int | None:
    """``vox_offset`` + voxel bytes from a NIfTI-1/2 header, or ``None`` when the header is not recognised."""
    for order in ("<", ">"):
        sizeof_hdr = int(np.frombuffer(header[:4], order + "i4")[0]) if len(header) >= 4 else 0
        if sizeof_hdr == 348 and len(header) >= 348:
            dim = np.frombuffer(header[40:56], order + "i2").astype(np.int64)
            bitpix = int(np.frombuffer(header[72:74], order + "i2")[0])
            offset = int(np.frombuffer(header[108:112], order + "f4")[0])
        elif sizeof_hdr == 540 and len(header) >= 540:
            dim = np.frombuffer(header[16:80], order + "i8")
            bitpix = int(np.frombuffer(header[14:16], order + "i2")[0])
            offset = int(np.frombuffer(header[168:176], order + "i8")[0])
        else:
            continue
        n = int(dim[0])
        if not 1 <= n <= 7 or bitpix <= 0 or any(d < 1 for d in dim[1:n + 1]):
            return None
        return max(offset, sizeof_hdr) + int(np.prod(dim[1:n + 1])) * bitpix // 8
    return None


def _read_sitk(path: PathLike) -> sitk.Image:
    path = Path(path)
    reader: sitk.ImageSeriesReader | sitk.ImageFileReader
    if path.is_dir():  # a DICOM series
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise ImageReadError(f"{path}: folder holds no DICOM series. Put the .dcm files of one series there.")
        if len(series) > 1:
            raise ImageReadError(f"{path}: folder holds {len(series)} DICOM series; keep one series per folder.")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
    elif not path.exists():
        raise ImageReadError(f"{path}: file does not exist.")
    else:
        _check_nifti_file(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
    try:
        return reader.Execute()
    except RuntimeError as e:  # the first line only says where in SimpleITK it failed; the last one says why
        why = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
        raise ImageReadError(f"{path}: SimpleITK cannot read it ({why}). Re-export the file.") from e


def _verify_written(written: Path, array: np.ndarray, path: Path) -> None:
    """Read back what SimpleITK wrote and compare it with ``array``: SimpleITK only prints "wrote only 0 of N
    bytes" on a full disk and does not raise, so an unverified file could be renamed into place."""
    try:
        back = sitk.GetArrayFromImage(_read_sitk(written))
    except ImageReadError as e:
        raise OSError(f"{path}: writing failed, the file cannot be read back ({e}); is the disk full?") from e
    if back.shape != array.shape or not np.array_equal(back, array):
        raise OSError(f"{path}: writing failed, the file read back differs from what was written; is the disk full?")


class SimpleITKIO(BaseReaderWriter):
    """Medical volumes through SimpleITK. Geometry (spacing, origin, direction) is kept and restored exactly."""

    supported_file_endings = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")

    def read_images(self, paths: Sequence[PathLike]) -> tuple[np.ndarray, Properties]:
        if not paths:
            raise ImageReadError("no image files given for this case")
        arrays, geometries = [], []
        for p in paths:
            img = _read_sitk(p)
            dim = img.GetDimension()
            if dim not in (2, 3):
                raise ImageReadError(f"{p}: {dim}D image; uadnet expects 2D or 3D files with one channel "
                                     "each. Split 4D/multi-channel volumes into one file per channel (_0000, _0001 ...).")
            if img.GetNumberOfComponentsPerPixel() != 1:
                raise ImageReadError(f"{p}: vector pixels ({img.GetNumberOfComponentsPerPixel()} components); "
                                     "store one channel per file.")
            arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
            if dim == 2:
                arr = arr[None]
            arrays.append(arr)
            geometries.append({
                "dimension": dim,
                "size": list(img.GetSize()),
                "spacing": list(img.GetSpacing()),
                "origin": list(img.GetOrigin()),
                "direction": list(img.GetDirection()),
            })
        for p, g in zip(paths[1:], geometries[1:]):
            diff = sitk_geometry_mismatch(geometries[0], g)
            if diff is not None:
                raise ImageReadError(f"{p}: geometry differs from {paths[0]} ({diff}). All channels of a case "
                                     "must share one grid; resample them onto the first channel.")
        g = geometries[0]
        spacing_zyx = [DUMMY_SLICE_SPACING, *g["spacing"][::-1]] if g["dimension"] == 2 else g["spacing"][::-1]
        props: Properties = {"spacing": [float(s) for s in spacing_zyx], "sitk": g, "reader": "SimpleITKIO"}
        return np.stack(arrays), props

    def write(self, array: np.ndarray, path: PathLike, properties: Properties) -> None:
        array = np.asarray(array)
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(f"SimpleITKIO writes one channel per file; got {array.shape[0]} channels")
            array = array[0]
        g = properties["sitk"]
        if g["dimension"] == 2:
            if array.shape[0] != 1:
                raise ValueError(f"cannot write a {array.shape[0]}-slice array into a 2D image")
            array = array[0]
        expected = tuple(g["size"][::-1])
        if array.shape != expected:
            raise ValueError(f"array shape {array.shape} does not match the image grid {expected} (z, y, x)")
        if array.dtype in (np.float64, np.float16):  # float16: SimpleITK has no such pixel type
            array = array.astype(np.float32)
        if array.dtype == bool:
            array = array.astype(np.uint8)
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(g["spacing"])
        img.SetOrigin(g["origin"])
        img.SetDirection(g["direction"])
        path = Path(path)
        suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
        # written to a temporary file with the same ending, then renamed: never a half-written output
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix in (".mhd", ".nhdr"):  # header + data file pair: the header names the data file
            sitk.WriteImage(img, str(path), useCompression=True)
            _verify_written(path, array, path)
            return
        with atomic_path(path, suffix) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
            _verify_written(tmp, array, path)

    def output_file_ending(self, input_file_ending: str) -> str:
        # DICOM cannot hold float maps; everything read from DICOM is written as NIfTI
        return ".nii.gz" if input_file_ending.lower() == ".dcm" else input_file_ending
