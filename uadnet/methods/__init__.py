"""Methods by name: each a ``Method`` subclass in its own module, bound to its own section of the plans.

Methods from other packages register through the entry-point group ``uadnet.methods`` (``name = "module:Class"``)
and are then used by name like the built-in ones (documentation/architecture.md).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from uadnet.methods.autoencoder import Autoencoder
from uadnet.methods.base import Method, Scorer
from uadnet.methods.cold_ensemble import ColdEnsemble
from uadnet.methods.cold_multistep import ColdMultistep
from uadnet.methods.image_conditioned import ImageConditioned
from uadnet.methods.synomaly import Synomaly
from uadnet.plans import Plans

ENTRY_POINT_GROUP = "uadnet.methods"
METHODS: dict[str, type[Method]] = {
    "cold_ensemble": ColdEnsemble,  # the default: ensembled cold diffusion with DAG
    "cold_multistep": ColdMultistep,  # DISYRE: FPI, multi-step restoration
    "image_conditioned": ImageConditioned,  # Baugh et al.: DDPM conditioned on the image, "many tasks"
    "synomaly": Synomaly,  # Bi et al.: DDPM on Synomaly noise, multi-stage restoration
    "autoencoder": Autoencoder,  # the reconstruction baseline (benchmarks), trained on healthy patches only
}
DEFAULT_METHOD = "cold_ensemble"


def available_methods() -> dict[str, type[Method]]:
    """The built-in methods and those registered under the ``uadnet.methods`` entry points (built-ins win)."""
    found = dict(METHODS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def method_class(name: str) -> type[Method]:
    """The method class registered as ``name``, with the list of known ones in the error."""
    methods = available_methods()
    if name not in methods:
        raise KeyError(f"unknown method '{name}'; available: {sorted(methods)}")
    return methods[name]


def build_method(name: str, plans: Plans, configuration: str | None = None) -> Method:
    """The method ``name`` bound to ``plans`` and ``configuration`` (``None``: the plans' default)."""
    return method_class(name)(plans, configuration)


__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "Scorer", "available_methods", "build_method", "method_class"]
