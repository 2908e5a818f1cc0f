"""``synomaly`` (Bi et al., MedIA 2025): an unconditional ε-UNet whose forward process adds Synomaly noise
(Gaussian noise plus shifted blobs) that it learns to predict, so one-step x̂₀ also removes blob-like intensity
anomalies; scored by multi-stage restoration. It computes the ε loss named in its own section (``loss``, default
``mse``). Settings: ``plans.methods.synomaly`` (see :class:`uadnet.plans.SynomalyPlan` for the symbols).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uadnet.methods.base import Method, Scorer
from uadnet.methods.ddpm import epsilon_loss, generator, to_image_range, to_model_range, training_timesteps
from uadnet.networks.ddpm_scheduler import DDPMScheduler, seeded_randn
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import Plans, SynomalyPlan
from uadnet.scoring.filters import gaussian_blur
from uadnet.utilities.torch_utils import autocast


class SynomalyScorer:
    """Bi et al.'s multi-stage diffusion. Each stage costs one forward pass; at most ``max_stages``. Samples of a
    batch stop independently; the loop ends when all have."""

    def __init__(self, model: nn.Module, scheduler: DDPMScheduler, stage_timesteps: Sequence[int], max_stages: int,
                 fusion_threshold: float, difference_sigma_voxels: float, score_sigma_voxels: float,
                 stop_relative_change: float, stop_min_voxel_fraction: float, precision: str = "fp32",
                 seed: int = 0) -> None:
        if not stage_timesteps or max_stages < 1:
            raise ValueError("methods.synomaly needs at least one stage timestep and max_stages >= 1")
        for t in stage_timesteps:
            if not 0 <= int(t) < scheduler.num_train_timesteps:
                raise ValueError(f"methods.synomaly.stage_timesteps must lie in [0, "
                                 f"{scheduler.num_train_timesteps - 1}], got {list(stage_timesteps)}")
        self.model, self.scheduler, self.precision, self.seed = model, scheduler, precision, seed
        self.stage_timesteps, self.max_stages = [int(t) for t in stage_timesteps], int(max_stages)
        self.fusion_threshold, self.difference_sigma = fusion_threshold, difference_sigma_voxels
        self.score_sigma, self.stop_relative_change = score_sigma_voxels, stop_relative_change
        self.stop_min_voxel_fraction = stop_min_voxel_fraction
        self.last_stage_counts: list[int] = []  # stages run per sample in the last call (for reports and tests)

    def _one_step_x0(self, x: Tensor, t: int, gen: torch.Generator) -> Tensor:
        noise = seeded_randn(x.shape, gen, x.device, x.dtype)
        x_t = self.scheduler.add_noise(x, noise, t)
        with autocast(x.device, self.precision):
            eps = self.model(x_t, torch.full((x.shape[0],), t / self.scheduler.num_train_timesteps,
                                             device=x.device)).float()
        return self.scheduler.predict_x0(x_t, eps, t).clamp(-1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        original = to_model_range(x)
        blurred_original = gaussian_blur(original, self.difference_sigma)
        current, restored = original, original
        active = torch.ones(b, dtype=torch.bool, device=x.device)
        stages = torch.zeros(b, dtype=torch.long)
        previous = None
        floor = self.stop_min_voxel_fraction * x[0, 0].numel()
        gen = generator(self.seed)
        keep = (-1,) + (1,) * (x.ndim - 1)
        for k in range(self.max_stages):
            x0 = self._one_step_x0(current, self.stage_timesteps[min(k, len(self.stage_timesteps) - 1)], gen)
            act = active.reshape(keep)
            restored = torch.where(act, x0, restored)
            stages += active.cpu().long()
            diff = (blurred_original - gaussian_blur(x0, self.difference_sigma)).abs().mean(1, keepdim=True)
            fusion = torch.where(diff >= self.fusion_threshold, diff, torch.zeros_like(diff)).clamp(max=1)
            current = torch.where(act, fusion * x0 + (1 - fusion) * original, current)
            count = (fusion > 0).flatten(1).sum(1).float()
            if previous is not None:
                change = (count - previous).abs() / torch.clamp(previous, min=floor)
                active &= change > self.stop_relative_change
            previous = count
            if not bool(active.any()):
                break
        self.last_stage_counts = stages.tolist()
        restored = to_image_range(restored)
        score = (gaussian_blur(x, self.score_sigma) - gaussian_blur(restored, self.score_sigma)).abs()
        return torch.cat([score.mean(1, keepdim=True), restored], dim=1)


class Synomaly(Method):
    name = "synomaly"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: SynomalyPlan = plans.methods.synomaly
        self.scheduler = self.make_scheduler(self.section)

    @staticmethod
    def make_scheduler(section: SynomalyPlan) -> DDPMScheduler:
        """The section's β schedule (``beta_schedule``; the linear one with the scheduler's default β range)."""
        return DDPMScheduler(section.num_train_timesteps, section.beta_schedule)

    def corruption(self):
        if self.section.corruption == "synomaly":  # the drawing form (galleries) carries no noise for training
            raise ValueError("methods.synomaly.corruption is 'synomaly' (an older default, which draws the anomaly "
                             "on the image); the method trains on 'synomaly_noise' — set it in uadnet_plans.json")
        return super().corruption()

    def network(self) -> nn.Module:
        return ConditionalUNet.from_plans(self.plans, self.configuration, self.num_channels, self.num_channels)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """ε loss with ε = the batch's Synomaly noise (``batch["noise"]``), x_t = √ᾱ·x₀ + √(1 − ᾱ)·ε."""
        p = self.section
        if "noise" not in batch:
            raise ValueError(f"the synomaly method needs structured noise from its corruption; "
                             f"methods.synomaly.corruption is '{p.corruption}', use 'synomaly_noise'")
        x0, noise = to_model_range(batch["target"]), batch["noise"].float()
        t = training_timesteps(x0.shape[0], p.num_train_timesteps, x0.device)
        eps = model(self.scheduler.add_noise(x0, noise, t), t.float() / p.num_train_timesteps)
        return epsilon_loss(eps, noise, p.loss)

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        p = self.section
        return SynomalyScorer(model, self.scheduler, p.stage_timesteps, p.max_stages, p.fusion_threshold,
                              p.difference_sigma_voxels, p.score_sigma_voxels, p.stop_relative_change,
                              p.stop_min_voxel_fraction, precision)
