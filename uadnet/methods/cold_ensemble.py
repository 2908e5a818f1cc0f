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
    mean of the K restorations. A :class:`uadnet.methods.base.MemberScorer`: the members are the K severities,
    member k's score ``|x − f(x, α_k)|`` (channel mean).
    """

    def __init__(self, model: nn.Module, severities: Sequence[float], precision: str = "fp32") -> None:
        if not severities or not all(0.0 < a <= 1.0 for a in severities):
            raise ValueError(f"ensemble severities must be in (0, 1], got {list(severities)}")
        self.model, self.severities, self.precision = model, [float(a) for a in severities], precision
        self.num_members = len(self.severities)

    def _residuals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(|x − f(x, α_k)| (k, b, c, *patch), restorations (k, b, c, *patch))``."""
        b, k = x.shape[0], len(self.severities)
        alphas = torch.tensor(self.severities, dtype=torch.float32, device=x.device).repeat_interleave(b)
        with autocast(x.device, self.precision):
            restored = self.model(x.repeat(k, *[1] * (x.ndim - 1)), alphas)
        restored = restored.float().reshape(k, *x.shape)
        return (x.unsqueeze(0) - restored).abs(), restored

    def __call__(self, x: Tensor) -> Tensor:
        residuals, restored = self._residuals(x)
        return torch.cat([residuals.mean(dim=(0, 2)).unsqueeze(1), restored.mean(0)], dim=1)

    def members(self, x: Tensor) -> Tensor:
        """As ``__call__`` (bit for bit), then the K per-severity scores: ``(b, 1 + c + K, *patch)``."""
        residuals, restored = self._residuals(x)
        return torch.cat([residuals.mean(dim=(0, 2)).unsqueeze(1), restored.mean(0),
                          residuals.mean(dim=2).transpose(0, 1)], dim=1)


class ColdEnsemble(ColdDiffusion):
    name = "cold_ensemble"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: ColdEnsemblePlan = plans.methods.cold_ensemble

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        return ColdEnsembleScorer(model, self.section.severities, precision)
