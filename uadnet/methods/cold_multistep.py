"""``cold_multistep``: DISYRE v1, trained on FPI corruptions and scored by multi-step restoration. Settings:
``plans.methods.cold_multistep``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from uadnet.methods.base import Scorer
from uadnet.methods.cold_diffusion import ColdDiffusion
from uadnet.plans import ColdMultistepPlan, Plans
from uadnet.utilities.torch_utils import autocast


class ColdMultistepScorer:
    """Multi-step cold-diffusion restoration (DISYRE, reference formulation): from α_T = ``start_severity`` (1 in the
    reference) down to 0 in ``num_steps`` equal steps, ``x̂₀ = f(x_t, α_t)``, ``x_{t-1} = clip(x̂₀ + (α_{t-1} / α_t)
    (x_t − x̂₀), 0, 1)``; score = the mean over steps of the restoration residual ``|x_t − x̂₀|`` (channel mean);
    restoration = the final ``x_0``."""

    def __init__(self, model: nn.Module, num_steps: int, start_severity: float, precision: str = "fp32") -> None:
        if num_steps < 1 or not 0.0 < start_severity <= 1.0:
            raise ValueError(f"need num_steps >= 1 and start_severity in (0, 1], got {num_steps}, {start_severity}")
        self.model, self.precision = model, precision
        self.alphas = np.linspace(start_severity, 0.0, num_steps + 1).tolist()

    def __call__(self, x: Tensor) -> Tensor:
        current, score = x, torch.zeros_like(x[:, :1])
        for a_t, a_next in zip(self.alphas[:-1], self.alphas[1:]):
            with autocast(x.device, self.precision):
                x0 = self.model(current, torch.full((x.shape[0],), a_t, device=x.device)).float()
            score = score + (current - x0).abs().mean(1, keepdim=True)
            current = (x0 + (a_next / a_t) * (current - x0)).clamp(0.0, 1.0)
        return torch.cat([score / (len(self.alphas) - 1), current], dim=1)


class ColdMultistep(ColdDiffusion):
    name = "cold_multistep"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: ColdMultistepPlan = plans.methods.cold_multistep

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        return ColdMultistepScorer(model, self.section.num_steps, self.section.start_severity, precision)
