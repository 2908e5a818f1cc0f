"""Intensity normalisation to [0, 1], one scheme per channel, chosen from the channel's name."""

from __future__ import annotations

import re

import numpy as np

from uadnet.plans import NormalizationPlan

_CT = re.compile(r"(^|[^a-z])(nc|ce)?cta?([^a-z]|$)", re.IGNORECASE)  # CT, CTA, NCCT, CECT, "CT venous"
_RGB = {"r", "g", "b", "red", "green", "blue", "rgb"}


def normalization_scheme_for(channel_name: str, file_ending: str, max_intensity: float | None = None) -> str:
    """``ct`` for names containing the word CT (also CTA, NCCT, CECT); ``rgb`` for R/G/B channels or photo formats whose intensities
    stay within 0..255 (``max_intensity``, when known); else ``percentile`` (MRI and anything unknown: robust
    per-image scaling)."""
    if _CT.search(channel_name):
        return "ct"
    photo = channel_name.strip().lower() in _RGB or file_ending.lower() in (".png", ".jpg", ".jpeg", ".bmp")
    if photo and (max_intensity is None or max_intensity <= 255):
        return "rgb"
    return "percentile"


def normalization_range(plan: NormalizationPlan, channel: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """The intensities ``(low, high)`` mapped to 0 and 1 for this image channel (``foreground``: bool mask); with
    ``plan.high_maps_to`` < 1 the returned ``high`` lies above the scheme's (headroom for hyperintensities)."""
    if plan.scheme == "percentile":
        values = channel[foreground] if foreground.any() else channel.ravel()
        low, high = np.percentile(values, [plan.lower_percentile, plan.upper_percentile])
    elif plan.scheme == "ct":
        if plan.low is None or plan.high is None:
            raise ValueError(f"CT normalisation of channel '{plan.channel}' needs 'low' and 'high' in the plans")
        low, high = plan.low, plan.high
    elif plan.scheme == "rgb":
        low, high = 0.0, 255.0
    elif plan.scheme == "none":
        low, high = 0.0, 1.0
    else:
        raise ValueError(f"unknown normalisation scheme '{plan.scheme}' for channel '{plan.channel}' "
                         "(use percentile, ct, rgb or none)")
    if not 0 < plan.high_maps_to <= 1:
        raise ValueError(f"normalization high_maps_to of channel '{plan.channel}' must lie in (0, 1], got "
                         f"{plan.high_maps_to}")
    return float(low), float(low + (high - low) / plan.high_maps_to)


def apply_normalization(values: np.ndarray, low: float, high: float, clip: bool) -> np.ndarray:
    """``(values - low) / (high - low)`` as float32, clipped to [0, 1] if ``clip``; constant → zeros."""
    scale = high - low
    out = (values.astype(np.float32) - low) / (scale if scale > 0 else 1.0)
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


def normalize(image: np.ndarray, foreground: np.ndarray, plans: list[NormalizationPlan]) -> tuple[np.ndarray, list]:
    """Normalise ``image`` (c, z, y, x) channel by channel; background (outside ``foreground``) becomes 0.

    Returns the normalised image and the ``(low, high)`` used per channel (stored with the case so the
    mapping can be inverted, e.g. to write restorations in original intensities).
    """
    if len(plans) != image.shape[0]:
        raise ValueError(f"the plans normalise {len(plans)} channel(s) but the image has {image.shape[0]}")
    out = np.zeros(image.shape, np.float32)
    ranges = []
    for c, plan in enumerate(plans):
        low, high = normalization_range(plan, image[c], foreground)
        out[c] = apply_normalization(image[c], low, high, plan.clip)
        out[c][~foreground] = 0.0
        ranges.append([low, high])
    return out, ranges
