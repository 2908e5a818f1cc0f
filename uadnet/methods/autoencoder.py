"""``autoencoder``: the reconstruction baseline of the quality benchmark, not one of uadnet's methods.

A UNet without skip connections (a convolutional autoencoder) trained on clean healthy patches only (corruption
``none``) to reconstruct its input; score = |x − AE(x)|. It shares the trainer, predictor, calibration and
evaluation with the real methods, so the comparison differs only in what is learned. Settings:
``plans.methods.autoencoder``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uadnet.methods.base import Method, Scorer, loss_function
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import AutoencoderPlan, Plans
from uadnet.utilities.torch_utils import autocast


class ReconstructionScorer:
    """Plain reconstruction: score = |x − f(x)|, channel mean; restoration f(x)."""

    def __init__(self, model: nn.Module, precision: str = "fp32") -> None:
        self.model, self.precision = model, precision

    def __call__(self, x: Tensor) -> Tensor:
        with autocast(x.device, self.precision):
            restored = self.model(x).float()
        return torch.cat([(x - restored).abs().mean(1, keepdim=True), restored], dim=1)


class Autoencoder(Method):
    name = "autoencoder"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: AutoencoderPlan = plans.methods.autoencoder

    def network(self) -> nn.Module:
        return ConditionalUNet.from_plans(self.plans, self.configuration, self.num_channels, self.num_channels,
                                          condition=False, skip_connections=self.section.skip_connections)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``loss(AE(x), x)`` of the configuration's ``training.loss`` over the (clean) patch."""
        return loss_function(self.cfg.training.loss)(model(batch["data"]).float(), batch["target"])

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        return ReconstructionScorer(model, precision)
