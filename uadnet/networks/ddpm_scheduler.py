"""DDPM noise scheduler for the two noise-based methods (``image_conditioned``, ``synomaly``).

A small object that owns the β schedule and the closed-form identities of a DDPM (Ho et al. 2020) with
ε-prediction; it knows nothing about networks or pipelines (in the spirit of diffusers' schedulers).

* forward noising ``q(x_t | x_0)``: :meth:`DDPMScheduler.add_noise`;
* one-step estimates: :meth:`~DDPMScheduler.predict_x0` (x̂₀ from ε) and :meth:`~DDPMScheduler.predict_eps`;
* training helpers: :meth:`~DDPMScheduler.offset_noise`, :meth:`~DDPMScheduler.min_snr_weights`;
* sampling with a chosen number of steps: :meth:`~DDPMScheduler.timesteps_for` and :meth:`~DDPMScheduler.step`
  (DDIM, Song et al. 2021: ``eta=0`` deterministic, ``eta=1`` the ancestral DDPM posterior variance), and the
  convenience loop :meth:`~DDPMScheduler.sample`, which also runs partial noising (start from an image noised
  to ``t_start < T``).

Conventions: timesteps are integers ``0 … T−1``; ``t_prev = -1`` denotes the clean image (ᾱ = 1). Images are
``(b, c, *spatial)`` (2D or 3D); a timestep argument is an ``int`` (shared by the batch) or an integer tensor
``(b,)``. The schedule is kept in float64 on the CPU; every coefficient is looked up there and cast to the
dtype and device of the image, so the scheduler works unchanged on CPU, CUDA and MPS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Timestep = int | torch.Tensor
BETA_SCHEDULES = ("linear", "cosine")


def cosine_betas(num_train_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2); β clipped at ``max_beta``.

    Returns ``(T,)`` float64 with β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta).
    """
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


class DDPMScheduler:
    """β schedule + DDPM/DDIM identities for an ε-prediction model.

    Attributes (float64, CPU): ``betas``, ``alphas`` (= 1 − β) and ``alphas_cumprod`` (ᾱ), each ``(T,)``.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if beta_schedule == "linear":
            if not 0 < beta_start <= beta_end < 1:
                raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        elif beta_schedule == "cosine":
            betas = cosine_betas(num_train_timesteps)
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)  # used by the linear schedule only
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def config(self) -> dict:
        """The constructor arguments, JSON-ready (``DDPMScheduler(**s.config())`` rebuilds ``s``)."""
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end}

    def __repr__(self) -> str:
        return f"DDPMScheduler(num_train_timesteps={self.num_train_timesteps}, beta_schedule={self.beta_schedule!r})"

    # ------------------------------------------------------------------ lookups
    def _alpha_bar(self, t: Timestep) -> torch.Tensor:
        """ᾱ_t in float64 on the CPU, shape of ``t`` (``t = -1`` → 1, the clean image)."""
        t = torch.as_tensor(t).long().cpu()
        if t.numel() and (int(t.min()) < -1 or int(t.max()) >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [-1, {self.num_train_timesteps - 1}], got {t.tolist()}")
        return torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))

    @staticmethod
    def _expand(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(b,)`` or scalar float64 coefficient → ``(b, 1, …, 1)`` in ``x``'s dtype/device, broadcastable to ``x``."""
        if coef.ndim == 1:
            if coef.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"{coef.shape[0]} timesteps for a batch of {x.shape[0]}")
            coef = coef.reshape(-1, *([1] * (x.ndim - 1)))
        return coef.to(device=x.device, dtype=x.dtype)

    def snr(self, t: Timestep) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t), float64 CPU, shape of ``t``."""
        a = self._alpha_bar(t)
        return a / (1 - a)

    # ------------------------------------------------------------------ identities
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Forward process ``x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise``; x0, noise ``(b, c, *spatial)``, t ``(b,)``."""
        a = self._alpha_bar(t)
        return self._expand(a.sqrt(), x0) * x0 + self._expand((1 - a).sqrt(), x0) * noise

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: Timestep) -> torch.Tensor:
        """One-step estimate ``x̂0 = (x_t − √(1 − ᾱ_t) · ε) / √ᾱ_t``; all images ``(b, c, *spatial)``."""
        a = self._alpha_bar(t)
        return self._expand(1 / a.sqrt(), x_t) * x_t - self._expand(((1 - a) / a).sqrt(), x_t) * eps

    def predict_eps(self, x_t: torch.Tensor, x0: torch.Tensor, t: Timestep) -> torch.Tensor:
        """The noise that takes ``x0`` to ``x_t``: ``ε = (x_t − √ᾱ_t · x0) / √(1 − ᾱ_t)`` (needs t ≥ 0)."""
        a = self._alpha_bar(t)
        return self._expand(1 / (1 - a).sqrt(), x_t) * x_t - self._expand((a / (1 - a)).sqrt(), x_t) * x0

    # ------------------------------------------------------------------ training helpers
    @staticmethod
    def offset_noise(shape: Sequence[int], strength: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Offset noise: ``ε = N(0, 1) + strength · N(0, 1)`` where the second term is one constant per sample and
        channel (shape ``(b, c, 1, …, 1)``), so the model also learns to change an image's mean intensity.

        ``shape``: ``(b, c, *spatial)``. Returns ``shape`` in ``dtype`` on ``device``.
        """
        shape = tuple(shape)
        noise = seeded_randn(shape, generator, device, dtype)
        if strength:
            noise = noise + strength * seeded_randn(shape[:2] + (1,) * (len(shape) - 2), generator, device, dtype)
        return noise

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-γ loss weights for ε-prediction (Hang et al. 2023): ``min(SNR_t, γ) / SNR_t`` ≤ 1.

        ``t``: ``(b,)`` integer timesteps → ``(b,)`` float32 on ``t``'s device (multiply the per-sample ε MSE).
        """
        snr = self.snr(t)
        return (snr.clamp(max=gamma) / snr).to(device=torch.as_tensor(t).device, dtype=torch.float32)

    # ------------------------------------------------------------------ sampling
    def timesteps_for(self, num_steps: int, start: int | None = None) -> torch.Tensor:
        """``num_steps`` evenly spaced, strictly descending integer timesteps from ``start`` (default T − 1) to 0.

        ``start < T − 1`` gives the schedule for partial noising (restoration from an image noised to ``start``).
        Returns ``(num_steps,)`` int64.
        """
        start = self.num_train_timesteps - 1 if start is None else int(start)
        if not 0 <= start < self.num_train_timesteps:
            raise ValueError(f"start must lie in [0, {self.num_train_timesteps - 1}], got {start}")
        if not 1 <= num_steps <= start + 1:
            raise ValueError(f"num_steps must lie in [1, {start + 1}] when starting from t={start}, got {num_steps}")
        if num_steps == 1:
            return torch.tensor([start], dtype=torch.long)
        return torch.linspace(start, 0, num_steps, dtype=torch.float64).round().long()

    def step(self, eps: torch.Tensor, t: Timestep, t_prev: Timestep, x_t: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None, clip_x0: tuple[float, float] | None = None) -> torch.Tensor:
        """One DDIM step ``x_t → x_{t_prev}`` given the model's ε ``(b, c, *spatial)``; ``t_prev = -1`` ends at x̂0.

        x̂0 = predict_x0(x_t, ε, t) (optionally clamped to ``clip_x0 = (lo, hi)``, with ε re-derived from it);
        σ = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev);
        x_prev = √ᾱ_prev · x̂0 + √(1 − ᾱ_prev − σ²) · ε + σ · z,  z ~ N(0, 1) from ``generator``.
        ``eta = 0`` is deterministic (DDIM); ``eta = 1`` uses the DDPM posterior variance β̃ (ancestral sampling,
        exactly DDPM when the steps are consecutive). Returns x_{t_prev}, same shape/dtype as ``x_t``.
        """
        x0 = self.predict_x0(x_t, eps, t)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
            eps = self.predict_eps(x_t, x0, t)
        a_t, a_prev = self._alpha_bar(t), self._alpha_bar(t_prev)
        if bool((a_prev < a_t).any()):
            raise ValueError(f"t_prev must be smaller than t, got t={t}, t_prev={t_prev}")
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        x_prev = self._expand(a_prev.sqrt(), x_t) * x0 + self._expand(direction, x_t) * eps
        if eta > 0 and bool((sigma > 0).any()):
            x_prev = x_prev + self._expand(sigma, x_t) * seeded_randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return x_prev

    @torch.no_grad()
    def sample(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: Sequence[int] | None,
               num_steps: int, generator: torch.Generator | None = None, x_start: torch.Tensor | None = None,
               t_start: int | None = None, eta: float = 0.0, *, clip_x0: tuple[float, float] | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Run ``num_steps`` DDIM/ancestral steps with ``model_fn(x_t (b, c, *spatial), t (b,) int64) → ε``.

        From pure noise of ``shape`` (on ``device``/``dtype``) when ``x_start`` is None; otherwise partial noising:
        ``x_start`` ``(b, c, *spatial)`` is noised to ``t_start`` (default T − 1) and denoised from there, so only
        structure destroyed at that noise level is re-synthesised. All randomness comes from ``generator``.
        Returns the restored image, shape of ``x_start`` or ``shape``.
        """
        if x_start is None:
            if shape is None:
                raise ValueError("give either shape (sampling from noise) or x_start (partial noising)")
            if t_start is not None:
                raise ValueError("t_start needs x_start (the image to noise partially)")
            x = seeded_randn(tuple(shape), generator, device, dtype)
            timesteps = self.timesteps_for(num_steps)
        else:
            timesteps = self.timesteps_for(num_steps, t_start)
            noise = seeded_randn(x_start.shape, generator, x_start.device, x_start.dtype)
            x = self.add_noise(x_start, noise, int(timesteps[0]))
        b = x.shape[0]
        for i, t in enumerate(timesteps.tolist()):
            t_prev = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
            eps = model_fn(x, torch.full((b,), t, dtype=torch.long, device=x.device))
            x = self.step(eps, t, t_prev, x, eta=eta, generator=generator, clip_x0=clip_x0)
        return x


def seeded_randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None,
                 dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (so a CPU generator seeds GPU runs) and moved."""
    src = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=src, dtype=dtype).to(device=device or src)
