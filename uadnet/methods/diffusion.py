"""The two noise-based (DDPM, ε-prediction) methods.

``image_conditioned`` (Baugh et al., UNSURE 2024): ε-UNet on ``[x_t, x_c]`` where x_c is the "many tasks"
corrupted patch and x_0 the clean one — the model learns to sample the healthy image *given* the corrupted one;
min-SNR-γ weighting and offset noise. ``synomaly`` (Bi et al., MedIA 2025): unconditional ε-UNet whose forward
process adds Synomaly noise (Gaussian noise plus shifted blobs) that it learns to predict, so one-step x̂₀ also
removes blob-like intensity anomalies. Both map images [0, 1] → [−1, 1]; the timestep is passed to the UNet as
``t / T`` (its embedding scales by 1000, i.e. the usual DDPM timestep for T = 1000).

Training randomness (timesteps, Gaussian noise) comes from torch's global generator, which the trainer seeds and
saves in its checkpoints (exact resume); the Synomaly noise comes from the data loader's seeded corruption. Both
methods compute the ε loss named in their own plans section (``loss``, default ``mse``), not the configuration's
``training.loss`` (L1 on images, for the restorers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from uadnet.methods.base import loss_function
from uadnet.networks.ddpm_scheduler import DDPMScheduler
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import Plans
from uadnet.scoring.diffusion_scorers import ImageConditionedScorer, SynomalyScorer, to_model_range
from uadnet.scoring.scorers import Scorer


def _epsilon_loss(eps: Tensor, target: Tensor, loss: str, weights: Tensor | None = None) -> Tensor:
    """Mean over samples of the per-sample ``loss`` (``mse``/``l1``) between predicted and true noise, optionally
    weighted per sample."""
    per_sample = loss_function(loss)(eps.float(), target, reduction="none").flatten(1).mean(1)
    return (per_sample * weights).mean() if weights is not None else per_sample.mean()


def _timesteps(batch_size: int, total: int, device: torch.device) -> Tensor:
    """Uniform training timesteps ``(b,)`` from torch's global generator (seeded and checkpointed by the trainer)."""
    return torch.randint(0, total, (batch_size,)).to(device)


@dataclass(frozen=True)
class ImageConditioned:
    name: str = "image_conditioned"

    def corruption_name(self, plans: Plans) -> str:
        return plans.methods.image_conditioned.corruption

    def build_network(self, plans: Plans, configuration: str | None, num_channels: int) -> nn.Module:
        return ConditionalUNet.from_plans(plans, configuration, 2 * num_channels, num_channels)

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], loss: str, plans: Plans) -> Tensor:
        """min-SNR-γ-weighted ε loss of ``model([x_t, x_c], t/T)``, x_t = clean patch noised with offset noise."""
        p = plans.methods.image_conditioned
        scheduler = DDPMScheduler.from_plan(p)
        x0, condition = to_model_range(batch["target"]), to_model_range(batch["data"])
        t = _timesteps(x0.shape[0], p.num_train_timesteps, x0.device)
        noise = scheduler.offset_noise(x0.shape, p.offset_noise).to(x0.device)  # CPU generator: checkpointed
        x_t = scheduler.add_noise(x0, noise, t)
        eps = model(torch.cat([x_t, condition], 1), t.float() / p.num_train_timesteps)
        weights = scheduler.min_snr_weights(t, p.min_snr_gamma) if p.min_snr_gamma else None
        return _epsilon_loss(eps, noise, p.loss, weights)

    def scorer(self, model: nn.Module, plans: Plans, precision: str) -> Scorer:
        p = plans.methods.image_conditioned
        return ImageConditionedScorer(model, DDPMScheduler.from_plan(p), p.sampling_steps, p.eta, p.score, precision)


@dataclass(frozen=True)
class Synomaly:
    name: str = "synomaly"

    def corruption_name(self, plans: Plans) -> str:
        name = plans.methods.synomaly.corruption
        if name == "synomaly":  # the drawing form (galleries) carries no noise for the forward process
            raise ValueError("methods.synomaly.corruption is 'synomaly' (an older default, which draws the anomaly "
                             "on the image); the method trains on 'synomaly_noise' — set it in uadnet_plans.json")
        return name

    def build_network(self, plans: Plans, configuration: str | None, num_channels: int) -> nn.Module:
        return ConditionalUNet.from_plans(plans, configuration, num_channels, num_channels)

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], loss: str, plans: Plans) -> Tensor:
        """ε loss with ε = the batch's Synomaly noise (``batch["noise"]``), x_t = √ᾱ·x₀ + √(1 − ᾱ)·ε."""
        p = plans.methods.synomaly
        if "noise" not in batch:
            raise ValueError(f"the synomaly method needs structured noise from its corruption; "
                             f"methods.synomaly.corruption is '{p.corruption}', use 'synomaly_noise'")
        scheduler = DDPMScheduler.from_plan(p)
        x0, noise = to_model_range(batch["target"]), batch["noise"].float()
        t = _timesteps(x0.shape[0], p.num_train_timesteps, x0.device)
        eps = model(scheduler.add_noise(x0, noise, t), t.float() / p.num_train_timesteps)
        return _epsilon_loss(eps, noise, p.loss)

    def scorer(self, model: nn.Module, plans: Plans, precision: str) -> Scorer:
        p = plans.methods.synomaly
        return SynomalyScorer(model, DDPMScheduler.from_plan(p), p.stage_timesteps, p.max_stages, p.fusion_threshold,
                              p.difference_sigma_voxels, p.score_sigma_voxels, p.stop_relative_change,
                              p.stop_min_voxel_fraction, precision)
