"""Cold-diffusion restorers (DISYRE): f(x_α, α) → x̂₀, trained on synthetic corruptions of severity α.

``cold_ensemble`` (the default; DAG corruption, score = mean over the plan's severities) and ``cold_multistep``
(FPI corruption, multi-step restoration) share the network and the loss and differ in the corruption and the
scorer. α = 0 is clean, α = 1 most corrupted, in training and at test time alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from uadnet.methods.base import loss_function
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import Plans
from uadnet.scoring.scorers import ColdEnsembleScorer, ColdMultistepScorer, Scorer


@dataclass(frozen=True)
class ColdDiffusion:
    """``name`` is ``cold_ensemble`` or ``cold_multistep`` (the section of ``plans.methods`` it reads)."""

    name: str

    def corruption_name(self, plans: Plans) -> str:
        return getattr(plans.methods, self.name).corruption

    def build_network(self, plans: Plans, configuration: str | None, num_channels: int) -> nn.Module:
        residual = getattr(plans.methods, self.name).residual
        return ConditionalUNet.from_plans(plans, configuration, num_channels, num_channels, residual=residual)

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], loss: str, plans: Plans) -> Tensor:
        """``loss(f(x_α, α), x)`` over the whole patch (clean samples, α = 0, teach the identity), each voxel
        weighted by ``1 + w · mask`` (w = the plans' ``anomaly_loss_weight``), normalised by the mean weight."""
        per_voxel = loss_function(loss)(model(batch["data"], batch["severity"]).float(), batch["target"],
                                        reduction="none")
        weight = getattr(plans.methods, self.name).anomaly_loss_weight
        if not weight:
            return per_voxel.mean()
        w = 1.0 + weight * batch["anomaly_mask"]
        return (per_voxel * w).mean() / w.mean()

    def scorer(self, model: nn.Module, plans: Plans, precision: str) -> Scorer:
        section = getattr(plans.methods, self.name)
        if self.name == "cold_ensemble":
            return ColdEnsembleScorer(model, section.severities, precision)
        return ColdMultistepScorer(model, section.num_steps, section.start_severity, precision)
