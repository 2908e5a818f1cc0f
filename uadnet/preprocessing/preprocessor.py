"""The one preprocessing function used for training and prediction, and its inverse used for export.

forward:  read ``(c, z, y, x)`` → transpose (slice axis first) → foreground → crop to its bounding box →
          normalise per channel → resample to the configuration's spacing
inverse:  resample back to the cropped shape → paste into the original (transposed) shape → transpose back,
          giving an array on exactly the grid the reader returned, ready for ``reader.write``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice, get_bbox_from_mask

from uadnet.plans import ConfigurationPlan, Plans
from uadnet.preprocessing.foreground import choose_foreground_method, compute_foreground
from uadnet.preprocessing.normalization import normalize
from uadnet.preprocessing.resampling import compute_new_shape, resample_data, resample_mask


@dataclass
class PreprocessedCase:
    data: np.ndarray  # (c, z, y, x) float32 in [0, 1] (normalised), on the configuration's grid
    foreground: np.ndarray  # (z, y, x) bool, same grid
    properties: dict[str, Any]  # JSON-serialisable; everything the inverse needs


def target_spacing_for(configuration: ConfigurationPlan, spacing: Sequence[float]) -> list[float]:
    """The case's spacing after resampling: the plan's, except 2D configurations keep the slice spacing."""
    target = list(configuration.spacing)
    if configuration.dim == 2 or not configuration.resample_slice_axis:
        target[0] = float(spacing[0])
    return target


def preprocess_case(image: np.ndarray, properties: dict[str, Any], plans: Plans, configuration: str,
                    mask: np.ndarray | None = None) -> PreprocessedCase:
    """Preprocess one case read by the dataset's reader (``image``: ``(c, z, y, x)``, ``mask``: ``(1, z, y, x)``)."""
    config = plans.configuration(configuration)
    if image.ndim != 4:
        raise ValueError(f"expected an image of shape (c, z, y, x), got {image.shape}")
    if image.shape[0] != len(plans.normalization):
        raise ValueError(f"the plans expect {len(plans.normalization)} channel(s) "
                         f"({', '.join(p.channel for p in plans.normalization)}), the case has {image.shape[0]}")
    tf = list(plans.transpose_forward)
    data = image.transpose([0, *[a + 1 for a in tf]])
    spacing = [float(properties["spacing"][a]) for a in tf]
    if mask is not None and np.asarray(mask).size != np.prod(image.shape[1:]):
        raise ValueError(f"the mask has shape {np.asarray(mask).shape}, the image {image.shape[1:]} (z, y, x): the "
                         "mask must lie on the image grid (run with --verify_dataset_integrity to find the file)")
    mask_t = None if mask is None else np.asarray(mask).reshape(image.shape[1:]).transpose(tf)

    method = choose_foreground_method(plans.foreground, data, mask_t is not None)
    fg = compute_foreground(data, method, mask_t)
    bbox = [[int(a), int(b)] for a, b in get_bbox_from_mask(fg)]
    slicer = bounding_box_to_slice(bbox)
    data = data[(slice(None), *slicer)]
    fg = fg[slicer]
    shape_after_crop = list(fg.shape)

    data, ranges = normalize(data, fg, plans.normalization)
    target = target_spacing_for(config, spacing)
    new_shape = compute_new_shape(shape_after_crop, spacing, target)
    data = resample_data(data, new_shape, config.resampling_order_data)
    if all(p.clip for p in plans.normalization):
        np.clip(data, 0.0, 1.0, out=data)
    fg = resample_mask(fg, new_shape, config.resampling_order_mask)
    data[:, ~fg] = 0.0

    props = {
        "reader_properties": properties,
        "shape_before_crop": [int(s) for s in image.shape[1:]],  # (z, y, x) as read, before transposing
        "bbox": bbox,  # half-open [start, end) per transposed axis
        "shape_after_crop": shape_after_crop,
        "spacing": spacing,  # transposed, mm
        "spacing_after_resampling": target,
        "shape_after_resampling": [int(s) for s in new_shape],
        "normalization_ranges": ranges,
        "foreground_method": method,
        "configuration": configuration,
    }
    return PreprocessedCase(data, fg, props)


def revert_preprocessing(array: np.ndarray, properties: dict[str, Any], plans: Plans, order: int = 1,
                         fill_value: float = 0.0) -> np.ndarray:
    """Map ``array`` ``(z, y, x)`` or ``(c, z, y, x)`` on the preprocessed grid back to the original grid.

    Resample to the cropped shape (spline ``order``; use 0 for labels), paste into an array of the original
    shape filled with ``fill_value``, transpose back. The result has the shape the reader returned.
    """
    squeeze = array.ndim == 3
    arr = array[None] if squeeze else array
    expected = tuple(properties["shape_after_resampling"])
    if tuple(arr.shape[1:]) != expected:
        raise ValueError(f"array shape {arr.shape[1:]} does not match the preprocessed shape {expected}")
    arr = resample_data(arr.astype(np.float32, copy=False), properties["shape_after_crop"], order)
    tf = list(plans.transpose_forward)
    shape_t = [properties["shape_before_crop"][a] for a in tf]
    out = np.full((arr.shape[0], *shape_t), fill_value, np.float32)
    out[(slice(None), *bounding_box_to_slice(properties["bbox"]))] = arr
    out = out.transpose([0, *[a + 1 for a in plans.transpose_backward]])
    return out[0] if squeeze else out
