"""What a method is: a small strategy object wiring a corruption, a restorer network, a loss and a scorer.

The trainer and the predictor only talk to this interface, so adding a method means adding one module and one
registry entry — never a trainer subclass.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from uadnet.plans import Plans
from uadnet.scoring.scorers import Scorer

LOSSES = {"l1": nn.functional.l1_loss, "mse": nn.functional.mse_loss}


def loss_function(name: str):
    """``l1`` or ``mse`` (``training.loss`` in the plans)."""
    if name not in LOSSES:
        raise ValueError(f"training.loss '{name}' is not supported; use one of {sorted(LOSSES)} in uadnet_plans.json")
    return LOSSES[name]


class Method(Protocol):
    name: str

    def corruption_name(self, plans: Plans) -> str:
        """The training corruption (a name in ``uadnet.corruption.registry.CORRUPTIONS``)."""
        ...

    def build_network(self, plans: Plans, configuration: str | None, num_channels: int) -> nn.Module:
        """The restorer for images with ``num_channels`` channels."""
        ...

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], loss: str, plans: Plans) -> Tensor:
        """Scalar loss of one batch (keys as made by ``uadnet.training.dataloading``, as tensors); ``loss`` is the
        configuration's ``training.loss`` (a method with its own loss setting, like the DDPMs', may ignore it)."""
        ...

    def scorer(self, model: nn.Module, plans: Plans, precision: str) -> Scorer:
        """The anomaly scorer of a trained ``model`` (see :mod:`uadnet.scoring.scorers`)."""
        ...
