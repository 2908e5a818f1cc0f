"""Corruption families by name, so methods and ``uadnet_plans.json`` name their corruption as data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uadnet.corruption.base import Identity
from uadnet.corruption.dag import DAG
from uadnet.corruption.fpi import FPI
from uadnet.corruption.intensity_blobs import IntensityBlobs
from uadnet.corruption.many_tasks import ManyTasks
from uadnet.corruption.synomaly_noise import SynomalyNoise, SynomalyTrainingNoise

if TYPE_CHECKING:
    from uadnet.plans import Plans

# Each entry has a ``from_plans(plans)`` classmethod reading ``plans.corruption`` (and its method's section).
CORRUPTIONS: dict[str, type] = {
    "fpi": FPI,  # DISYRE v1
    "dag": DAG,  # DISYRE v2, the default
    "many_tasks": ManyTasks,  # image-conditioned DDPM (training task fold; ManyTasks.from_plans(p, "validation"))
    "synomaly": SynomalyNoise,  # Synomaly noise drawn on the image (galleries; ``.sample`` gives the noise)
    "synomaly_noise": SynomalyTrainingNoise,  # Synomaly training: clean image + ``noise`` for the forward process
    "none": Identity,  # healthy patches only (the autoencoder baseline)
    "intensity_blobs": IntensityBlobs,  # validation: lesion-like regions of scaled intensity (colour)
}


# Families that leave the image itself unchanged (nothing to show in a gallery).
NOT_DRAWN = frozenset({"none", "synomaly_noise"})


class ManyTasksValidation(ManyTasks):
    """The held-out "many tasks" fold (``plans.validation.tasks``, default fractal intensity and foreign patch) with
    no clean samples: the synthetic anomalies the trainer validates every method on (tasks no method trains on).
    The trainer sizes them with ``plans.validation.size_law`` when the plans set one (``make_validation_set``)."""

    @classmethod
    def from_plans(cls, plans: Plans) -> ManyTasks:  # type: ignore[override]
        tasks = ManyTasks.from_plans(plans, "validation")
        tasks.clean_fraction = 0.0
        return tasks


CORRUPTIONS["many_tasks_validation"] = ManyTasksValidation


def build_corruption(name: str, plans: Plans) -> Any:
    """The corruption ``name`` configured from ``plans`` (a callable following ``base.Corruption``)."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption '{name}'; known: {sorted(CORRUPTIONS)}. Check the method's "
                       "'corruption' entry in uadnet_plans.json.")
    return CORRUPTIONS[name].from_plans(plans)
