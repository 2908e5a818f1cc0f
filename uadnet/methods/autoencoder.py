"""``autoencoder``: the reconstruction baseline of the quality benchmark, not one of uadnet's methods.

A UNet without skip connections (a convolutional autoencoder) trained on clean healthy patches only (corruption
``none``) to reconstruct its input; score = |x − AE(x)|. It shares the trainer, predictor, calibration and
evaluation with the real methods, so the comparison differs only in what is learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from uadnet.methods.base import loss_function
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import Plans
from uadnet.scoring.scorers import ReconstructionScorer, Scorer


@dataclass(frozen=True)
class Autoencoder:
    name: str = "autoencoder"

    def corruption_name(self, plans: Plans) -> str:
        return plans.methods.autoencoder.corruption

    def build_network(self, plans: Plans, configuration: str | None, num_channels: int) -> nn.Module:
        return ConditionalUNet.from_plans(plans, configuration, num_channels, num_channels, condition=False,
                                          skip_connections=plans.methods.autoencoder.skip_connections)

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], loss: str, plans: Plans) -> Tensor:
        """``loss(AE(x), x)`` of the configuration's ``training.loss`` over the (clean) patch."""
        return loss_function(loss)(model(batch["data"]).float(), batch["target"])

    def scorer(self, model: nn.Module, plans: Plans, precision: str) -> Scorer:
        return ReconstructionScorer(model, precision)
