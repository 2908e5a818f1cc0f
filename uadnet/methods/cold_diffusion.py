"""What the two cold-diffusion restorers (DISYRE) share: f(x_α, α) → x̂₀, trained on synthetic corruptions of
severity α with an anomaly-weighted image loss. α = 0 is clean, α = 1 most corrupted, in training and at test time.

``cold_ensemble`` (:mod:`uadnet.methods.cold_ensemble`) and ``cold_multistep``
(:mod:`uadnet.methods.cold_multistep`) differ in their corruption family and their scorer.
"""

from __future__ import annotations

from torch import Tensor, nn

from uadnet.methods.base import Method, loss_function
from uadnet.networks.unet import ConditionalUNet


class ColdDiffusion(Method):
    """The restorer and the loss of a cold-diffusion method; the section needs ``residual`` and
    ``anomaly_loss_weight``."""

    def network(self) -> nn.Module:
        return ConditionalUNet.from_plans(self.plans, self.configuration, self.num_channels, self.num_channels,
                                          residual=self.section.residual)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``loss(f(x_α, α), x)`` (the configuration's ``training.loss``) over the whole patch (clean samples,
        α = 0, teach the identity), each voxel weighted by ``1 + w · mask`` (w = ``anomaly_loss_weight``),
        normalised by the mean weight."""
        per_voxel = loss_function(self.cfg.training.loss)(model(batch["data"], batch["severity"]).float(),
                                                          batch["target"], reduction="none")
        weight = self.section.anomaly_loss_weight
        if not weight:
            return per_voxel.mean()
        w = 1.0 + weight * batch["anomaly_mask"]
        return (per_voxel * w).mean() / w.mean()
