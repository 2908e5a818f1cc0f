"""``image_conditioned`` (Baugh et al., UNSURE 2024): an ε-UNet on ``[x_t, x_c]`` where x_c is the "many tasks"
corrupted patch and x_0 the clean one — the model learns to sample the healthy image *given* the corrupted one;
min-SNR-γ weighting and offset noise. It computes the ε loss named in its own section (``loss``, default ``mse``),
not the configuration's ``training.loss``. Settings: ``plans.methods.image_conditioned``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uadnet.methods.base import Method, Scorer
from uadnet.methods.ddpm import epsilon_loss, generator, to_image_range, to_model_range, training_timesteps
from uadnet.networks.ddpm_scheduler import DDPMScheduler
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import ImageConditionedPlan, Plans
from uadnet.scoring.filters import ssim_map
from uadnet.utilities.torch_utils import autocast

SCORES = ("mae", "ssim")


class ImageConditionedScorer:
    """x̂ = ``num_steps`` DDIM/ancestral steps from pure noise with ε = model([x_t, x_c], t/T), x_c the test patch;
    score = |x − x̂| (``mae``) or 1 − SSIM (``ssim``), channel mean. Costs ``num_steps`` forward passes per patch."""

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

        sample = self.scheduler.sample(eps, x.shape, self.num_steps, generator=generator(self.seed), eta=self.eta,
                                       clip_x0=(-1.0, 1.0), device=x.device, dtype=torch.float32)
        restored = to_image_range(sample)
        if self.score == "mae":
            score = (x - restored).abs().mean(1, keepdim=True)
        else:
            score = (1 - ssim_map(x, restored)).clamp(min=0).mean(1, keepdim=True)
        return torch.cat([score, restored], dim=1)


class ImageConditioned(Method):
    name = "image_conditioned"

    def __init__(self, plans: Plans, configuration: str | None = None) -> None:
        super().__init__(plans, configuration)
        self.section: ImageConditionedPlan = plans.methods.image_conditioned
        self.scheduler = self.make_scheduler(self.section)

    @staticmethod
    def make_scheduler(section: ImageConditionedPlan) -> DDPMScheduler:
        """The β schedule of the section (linear from ``beta_start`` to ``beta_end``, or cosine)."""
        return DDPMScheduler(section.num_train_timesteps, section.beta_schedule, section.beta_start, section.beta_end)

    def network(self) -> nn.Module:
        return ConditionalUNet.from_plans(self.plans, self.configuration, 2 * self.num_channels, self.num_channels)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """min-SNR-γ-weighted ε loss of ``model([x_t, x_c], t/T)``, x_t = clean patch noised with offset noise."""
        p = self.section
        x0, condition = to_model_range(batch["target"]), to_model_range(batch["data"])
        t = training_timesteps(x0.shape[0], p.num_train_timesteps, x0.device)
        noise = self.scheduler.offset_noise(x0.shape, p.offset_noise).to(x0.device)  # CPU generator: checkpointed
        x_t = self.scheduler.add_noise(x0, noise, t)
        eps = model(torch.cat([x_t, condition], 1), t.float() / p.num_train_timesteps)
        weights = self.scheduler.min_snr_weights(t, p.min_snr_gamma) if p.min_snr_gamma else None
        return epsilon_loss(eps, noise, p.loss, weights)

    def scorer(self, model: nn.Module, precision: str) -> Scorer:
        p = self.section
        return ImageConditionedScorer(model, self.scheduler, p.sampling_steps, p.eta, p.score, precision)
