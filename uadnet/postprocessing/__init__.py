"""Postprocessing of anomaly maps (foreground masking, smoothing, small-component removal), decided on validation."""

from uadnet.postprocessing.postprocessing import Postprocessing, apply_postprocessing, decide_postprocessing

__all__ = ["Postprocessing", "apply_postprocessing", "decide_postprocessing"]
