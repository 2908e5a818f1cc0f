"""2D photographs and screenshots (PNG, TIF, BMP, JPG) through scikit-image.

Grey images give one channel, RGB images three (an alpha channel is dropped). The spacing is 1 per pixel in
plane and ``DUMMY_SLICE_SPACING`` across the single slice. Float arrays (anomaly maps) can only be written to
TIF; ``output_file_ending`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skimage.io

from uadnet.imageio.base_reader_writer import (
    DUMMY_SLICE_SPACING,
    BaseReaderWriter,
    ImageReadError,
    PathLike,
    Properties,
)
from uadnet.utilities.file_io import atomic_path


class NaturalImage2DIO(BaseReaderWriter):
    supported_file_endings = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")

    def read_images(self, paths: Sequence[PathLike]) -> tuple[np.ndarray, Properties]:
        if not paths:
            raise ImageReadError("no image files given for this case")
        channels, shapes, dtypes = [], [], []
        for p in paths:
            if not Path(p).is_file():
                raise ImageReadError(f"{p}: file does not exist.")
            try:
                img = skimage.io.imread(str(p))
            except Exception as e:  # the plugins raise many different types
                raise ImageReadError(f"{p}: cannot read it as an image ({e}). Re-export the file.") from e
            if img.ndim == 3 and img.shape[-1] in (2, 3, 4):  # grey+alpha, RGB, RGBA: drop the alpha channel
                img = np.moveaxis(img[..., :1] if img.shape[-1] == 2 else img[..., :3], -1, 0)
            elif img.ndim == 2:
                img = img[None]
            else:
                raise ImageReadError(f"{p}: array of shape {img.shape}; expected a 2D grey or RGB image. "
                                     "For 3D stacks use NIfTI/NRRD (SimpleITKIO).")
            shapes.append(img.shape[1:])
            dtypes.append(str(img.dtype))
            channels.extend(c[None] for c in img)
        for p, s in zip(paths[1:], shapes[1:]):
            if s != shapes[0]:
                raise ImageReadError(f"{p}: size {s} differs from {paths[0]} {shapes[0]}; all channels of a case "
                                     "must have the same size.")
        arr = np.stack(channels).astype(np.float32)  # (c, 1, y, x)
        props: Properties = {
            "spacing": [DUMMY_SLICE_SPACING, 1.0, 1.0],
            "natural": {"shape": list(shapes[0]), "dtypes": dtypes},
            "reader": "NaturalImage2DIO",
        }
        return arr, props

    def write(self, array: np.ndarray, path: PathLike, properties: Properties) -> None:
        array = np.asarray(array)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[1] != 1:
            raise ValueError(f"expected (c, 1, y, x) or (1, y, x), got {array.shape}")
        if list(array.shape[2:]) != properties["natural"]["shape"]:
            raise ValueError(f"array size {array.shape[2:]} does not match the image {properties['natural']['shape']}")
        c = array.shape[0]
        if c not in (1, 3):
            raise ValueError(f"can write 1 or 3 channels to a natural image, got {c}")
        img = array[0, 0] if c == 1 else np.moveaxis(array[:, 0], 0, -1)
        path = Path(path)
        ending = path.suffix.lower()
        if ending not in (".tif", ".tiff"):
            img = self._to_storable(img, path, 65535 if ending == ".png" else 255, properties)
        with atomic_path(path, path.suffix) as tmp:
            skimage.io.imsave(str(tmp), img, check_contrast=False)
            try:  # verified before it is renamed into place: a full disk must not leave a damaged output
                back = skimage.io.imread(str(tmp))
                ok = back.shape == img.shape and (ending in (".jpg", ".jpeg") or np.array_equal(back, img))
            except Exception as e:
                raise OSError(f"{path}: writing failed, the file cannot be read back ({e}); is the disk full?") from e
            if not ok:
                raise OSError(f"{path}: writing failed, the file read back differs from what was written")

    @staticmethod
    def _to_storable(img: np.ndarray, path: Path, vmax: int, properties: Properties) -> np.ndarray:
        """Cast to uint8 (or uint16 for PNG) without loss, e.g. a label map read back as float32; else raise."""
        if img.dtype == bool:
            return img.astype(np.uint8) * 255
        if img.dtype == np.uint8 or (img.dtype == np.uint16 and vmax == 65535):
            return img
        if img.dtype.kind in "iuf" and np.isfinite(img).all() and (img == np.round(img)).all() \
                and img.min() >= 0 and img.max() <= vmax:
            wide = img.max() > 255 or "uint16" in properties.get("natural", {}).get("dtypes", [])
            return img.astype(np.uint16 if wide and vmax == 65535 else np.uint8)
        raise ValueError(f"{path}: {img.dtype} data (not whole numbers in 0..{vmax}) cannot be stored in "
                         f"{path.suffix}; write a .tif instead")

    def output_file_ending(self, input_file_ending: str) -> str:
        """Float anomaly maps go to TIF; binary masks may use the input's ending."""
        return ".tif"
