"""``cold_ensemble``, the default: ensembled cold diffusion with DAG (DISYRE v2). Trained on DAG corruptions;
score = mean over the plan's severities α_k of |x − f(x, α_k)|. Settings: ``plans.methods.cold_ensemble``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uadnet.methods.base import Scorer
from uadnet.methods.cold_diffusion import ColdDiffusion
from uadnet.plans import ColdEnsemblePlan, Plans
from uadnet.utilities.torch_utils import autocast


class ColdEnsembleScorer:
    """Score = mean over k of |x − f(x, α_k)|, channel-mean.

    All K severities run in one forward pass (the batch is repeated K times); the restoration returned is the
    mean of the K restorations.
    """

    def __init__(self, model: nn.Module, severities: Sequence[float], precision: str = "fp32") -> None:
        if not severities or not all(0.0 < a <= 1.0 for a in severities):
            raise ValueError(f"ensemble severities must be in (0, 1], got {list(severities)}")
        self.model, self.severities, self.precision = model, [float(a) for a in severities], precision

    def __call__(self, x: Tensor) -> Tensor:
        b, k = x.shape[0], len(self.severities)
        alphas = torch.tensor(self.severities, dtype=torch.float32, device=x.device).repeat_interleave(b)
        with autocast(x.device, self.precision):
            restored = self.model(x.repeat(k, *[1] * (x.ndim - 1)), alphas)
        restored = restored.float().reshape(k, *x.shape)
        score = (x.unsqueeze(0) - restored).abs().mean(dim=(0, 2)).unsqueeze(1)
        return torch.cat([score, restored.mean(0)], dim=1)


class ColdEnsemble(ColdDiffusion):
    name = "cold_ensemble"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: ColdEnsemblePlan = plans.methods.cold_ensemble

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        return ColdEnsembleScorer(model, self.section.severities, precision)
