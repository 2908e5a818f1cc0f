"""Corruption families by name, so methods and ``uadnet_plans.json`` name their corruption as data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uadnet.corruption.dag import DAG
from uadnet.corruption.fpi import FPI
from uadnet.corruption.many_tasks import ManyTasks
from uadnet.corruption.synomaly_noise import SynomalyNoise

if TYPE_CHECKING:
    from uadnet.plans import Plans

# Each entry has a ``from_plans(plans)`` classmethod reading ``plans.corruption`` (and its method's section).
CORRUPTIONS: dict[str, type] = {
    "fpi": FPI,  # DISYRE v1
    "dag": DAG,  # DISYRE v2, the default
    "many_tasks": ManyTasks,  # image-conditioned DDPM (training task fold; ManyTasks.from_plans(p, "validation"))
    "synomaly": SynomalyNoise,  # Synomaly noise (``.sample`` gives the noise; the call draws it on the image)
}


def build_corruption(name: str, plans: Plans) -> Any:
    """The corruption ``name`` configured from ``plans`` (a callable following ``base.Corruption``)."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption '{name}'; known: {sorted(CORRUPTIONS)}. Check the method's "
                       "'corruption' entry in uadnet_plans.json.")
    return CORRUPTIONS[name].from_plans(plans)
