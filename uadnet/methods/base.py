"""What a method is: a small strategy object, bound to the plans and its own typed plans section, that makes its
corruption, its restorer network, its loss and its scorer.

The trainer and the predictor only talk to this interface, so adding a method means one module (a ``Method``
subclass, its scorer and its plans section) and one registry entry (or a ``uadnet.methods`` entry point) — never a
trainer subclass. See documentation/architecture.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from uadnet.corruption.registry import build_corruption
from uadnet.plans import ConfigurationPlan, Plans, section_from_dict


def l1_plus_mse(prediction: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``|e| + e²`` per voxel (e = prediction − target): L1's pull on small errors, MSE's on large ones."""
    return (nn.functional.l1_loss(prediction, target, reduction=reduction)
            + nn.functional.mse_loss(prediction, target, reduction=reduction))


LOSSES = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss, "l1_mse": l1_plus_mse}


def loss_function(name: str):
    """``l1``, ``mse`` or ``l1_mse`` (their sum) (``training.loss`` in the plans)."""
    if name not in LOSSES:
        raise ValueError(f"training.loss '{name}' is not supported; use one of {sorted(LOSSES)} in uadnet_plans.json")
    return LOSSES[name]


class Scorer(Protocol):
    """Patches ``x`` (b, c, *patch) in [0, 1] → ``(b, 1 + c, *patch)``: channel 0 the anomaly score (≥ 0, larger =
    more anomalous), channels ``1..c`` the restoration x̂ (the healthy estimate, in [0, 1])."""

    def __call__(self, x: Tensor) -> Tensor: ...


class MemberScorer(Scorer, Protocol):
    """A scorer whose score is the mean of ``num_members`` member scores (``cold_ensemble``: one per severity α_k).
    ``members(x)`` → ``(b, 1 + c + M, *patch)``: channels ``0..c`` exactly as ``__call__``, then the M member
    scores (same units as the score; their mean is channel 0). Called only when the member maps are asked for
    (``uadnet_predict --save_uncertainty``); every other path calls ``__call__``."""

    num_members: int

    def members(self, x: Tensor) -> Tensor: ...


def num_members(scorer: Scorer) -> int:
    """M of a :class:`MemberScorer`; 1 for any other scorer (its score is its only member)."""
    return int(getattr(scorer, "num_members", 1)) if callable(getattr(scorer, "members", None)) else 1


class Method(ABC):
    """One method, bound to ``plans`` and a configuration (``None``: the plans' default).

    Subclasses set ``name`` (the ``-m`` name) and, in ``__init__``, ``self.section``: their own typed section of
    ``plans.methods``. ``self.cfg`` is the configuration's plan (network, patch, training settings).
    """

    name: ClassVar[str]
    section: Any

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        self.plans = plans
        self.configuration = configuration or plans.default_configuration
        self.cfg: ConfigurationPlan = plans.configuration(self.configuration)
        self.num_channels = len(plans.channel_names)

    def plugin_section(self, section_class: type) -> Any:
        """For methods from other packages: ``plans.methods.plugins[self.name]`` as a ``section_class`` (a dataclass
        whose fields all have defaults), checked like the built-in sections."""
        data = self.plans.methods.plugins.get(self.name, {})
        return section_from_dict(section_class, data, f"methods.plugins.{self.name}")

    def corruption(self) -> Any:
        """The training corruption, an object following ``uadnet.corruption.base.Corruption``, configured from
        the plans (the section's ``corruption`` family)."""
        return build_corruption(self.section.corruption, self.plans)

    @abstractmethod
    def network(self) -> nn.Module:
        """A fresh restorer for images with ``self.num_channels`` channels."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Scalar loss of one batch (keys as made by ``uadnet.training.dataloading``, as tensors)."""

    @abstractmethod
    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        """The anomaly scorer of a trained ``model``."""
