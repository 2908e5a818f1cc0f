"""Scorers of the two noise-based methods (``image_conditioned``, ``synomaly``); same contract as
:mod:`uadnet.scoring.scorers`: patches ``x`` (b, c, *patch) in [0, 1] → ``(b, 1 + c, *patch)`` = score +
restoration (in [0, 1]).

The DDPMs work in [−1, 1] (``2x − 1``). All sampling noise comes from a generator re-seeded with ``seed`` at every
call (batch), so prediction is reproducible: the same input, patch size and batch size give the same maps. A
tile's noise is its row of the batch's draw, so it is not independent of the tiling; every fold of an ensemble
uses the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uadnet.networks.ddpm_scheduler import DDPMScheduler, seeded_randn
from uadnet.scoring.filters import gaussian_blur, ssim_map
from uadnet.utilities.torch_utils import autocast

SCORES = ("mae", "ssim")


def to_model_range(x: Tensor) -> Tensor:
    """[0, 1] → the DDPM's [−1, 1]."""
    return 2 * x - 1


def to_image_range(x: Tensor) -> Tensor:
    """[−1, 1] → [0, 1], clipped."""
    return ((x + 1) / 2).clamp(0, 1)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class ImageConditionedScorer:
    """Baugh et al.: x̂ = ``num_steps`` DDIM/ancestral steps from pure noise with ε = model([x_t, x_c], t/T),
    x_c the test patch; score = |x − x̂| (``mae``) or 1 − SSIM (``ssim``), channel mean. Costs ``num_steps``
    forward passes per patch."""

    def __init__(self, model: nn.Module, scheduler: DDPMScheduler, num_steps: int, eta: float = 0.0,
                 score: str = "mae", precision: str = "fp32", seed: int = 0) -> None:
        if score not in SCORES:
            raise ValueError(f"methods.image_conditioned.score must be one of {SCORES}, got {score!r}")
        scheduler.timesteps_for(num_steps)  # validates the step count
        self.model, self.scheduler, self.num_steps, self.eta = model, scheduler, num_steps, eta
        self.score, self.precision, self.seed = score, precision, seed

    def __call__(self, x: Tensor) -> Tensor:
        condition = to_model_range(x)
        total = self.scheduler.num_train_timesteps

        def eps(x_t: Tensor, t: Tensor) -> Tensor:
            with autocast(x.device, self.precision):
                return self.model(torch.cat([x_t, condition], 1), t.float() / total).float()

        sample = self.scheduler.sample(eps, x.shape, self.num_steps, generator=_generator(self.seed), eta=self.eta,
                                       clip_x0=(-1.0, 1.0), device=x.device, dtype=torch.float32)
        restored = to_image_range(sample)
        if self.score == "mae":
            score = (x - restored).abs().mean(1, keepdim=True)
        else:
            score = (1 - ssim_map(x, restored)).clamp(min=0).mean(1, keepdim=True)
        return torch.cat([score, restored], dim=1)


class SynomalyScorer:
    """Bi et al.'s multi-stage diffusion (see :class:`uadnet.plans.SynomalyPlan` for the symbols). Each stage costs
    one forward pass; at most ``max_stages``. Samples of a batch stop independently; the loop ends when all have."""

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

    def _one_step_x0(self, x: Tensor, t: int, generator: torch.Generator) -> Tensor:
        noise = seeded_randn(x.shape, generator, x.device, x.dtype)
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
        generator = _generator(self.seed)
        keep = (-1,) + (1,) * (x.ndim - 1)
        for k in range(self.max_stages):
            x0 = self._one_step_x0(current, self.stage_timesteps[min(k, len(self.stage_timesteps) - 1)], generator)
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
