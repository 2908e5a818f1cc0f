"""Methods by name: each a small composition of a corruption, a restorer network, a loss and a scorer."""

from __future__ import annotations

from uadnet.methods.autoencoder import Autoencoder
from uadnet.methods.base import Method
from uadnet.methods.cold_diffusion import ColdDiffusion
from uadnet.methods.diffusion import ImageConditioned, Synomaly

METHODS: dict[str, Method] = {
    "cold_ensemble": ColdDiffusion("cold_ensemble"),  # the default: ensembled cold diffusion with DAG
    "cold_multistep": ColdDiffusion("cold_multistep"),  # DISYRE: FPI, multi-step restoration
    "image_conditioned": ImageConditioned(),  # Baugh et al.: DDPM conditioned on the image, "many tasks"
    "synomaly": Synomaly(),  # Bi et al.: DDPM on Synomaly noise, multi-stage restoration
    "autoencoder": Autoencoder(),  # the reconstruction baseline (benchmarks), trained on healthy patches only
}
DEFAULT_METHOD = "cold_ensemble"


def get_method(name: str) -> Method:
    """The method registered as ``name``, with the list of known ones in the error."""
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; available: {sorted(METHODS)}")
    return METHODS[name]


__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "get_method"]
