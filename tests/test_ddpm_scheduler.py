"""DDPM scheduler identities: schedules, forward noising, one-step x̂₀, min-SNR, DDIM/ancestral sampling."""

from __future__ import annotations

import json
import math

import pytest
import torch

from uadnet.networks.ddpm_scheduler import DDPMScheduler
from uadnet.plans import ImageConditionedPlan, SynomalyPlan

SCHEDULES = ["linear", "cosine"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x0(shape=(3, 2, 8, 8), seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed), dtype=dtype)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_monotone_and_in_range(schedule):
    s = DDPMScheduler(1000, schedule)
    assert s.betas.shape == s.alphas_cumprod.shape == (1000,)
    assert (s.betas > 0).all() and (s.betas <= 0.999).all()
    assert (torch.diff(s.alphas_cumprod) < 0).all()
    assert (s.alphas_cumprod > 0).all() and (s.alphas_cumprod < 1).all()
    if schedule == "linear":
        assert (torch.diff(s.betas) > 0).all()
        assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    else:
        assert (torch.diff(s.betas) >= 0).all()


def test_cosine_endpoints():
    s = DDPMScheduler(1000, "cosine")
    assert s.betas[-1].item() == pytest.approx(0.999)  # clipped
    assert s.betas[0].item() < 1e-4 and s.alphas_cumprod[0].item() > 0.9999
    assert s.alphas_cumprod[-1].item() < 1e-6
    # unclipped part follows the closed form f(t+1)/f(0), f(t) = cos²(((t/T)+s)/(1+s)·π/2)
    def f(t: int) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_the_methods_build_their_scheduler_once_from_their_plans_section_and_it_round_trips():
    from uadnet.methods.image_conditioned import ImageConditioned
    from uadnet.methods.synomaly import Synomaly

    a = ImageConditioned.make_scheduler(ImageConditionedPlan())
    assert a.beta_schedule == "linear" and a.num_train_timesteps == 1000
    assert torch.allclose(a.betas, DDPMScheduler(1000, "linear", 1e-4, 0.02).betas)
    b = Synomaly.make_scheduler(SynomalyPlan(num_train_timesteps=500))
    assert b.beta_schedule == "cosine" and b.betas.shape == (500,)
    for s in (a, b):
        again = DDPMScheduler(**json.loads(json.dumps(s.config())))
        assert again.config() == s.config() and torch.equal(again.alphas_cumprod, s.alphas_cumprod)
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMScheduler(10, "quadratic")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_closed_form_and_inverses(schedule):
    s = DDPMScheduler(1000, schedule)
    x0, noise = _x0(), torch.randn(3, 2, 8, 8, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0, 417, 999])
    a = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = s.add_noise(x0, noise, t)
    assert torch.equal(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    torch.testing.assert_close(s.predict_x0(xt, noise, t), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(s.predict_eps(xt, x0, t), noise, atol=1e-8, rtol=0)
    # float32 and 3D, shared int timestep
    x32 = _x0((2, 1, 4, 4, 4), dtype=torch.float32)
    n32 = torch.randn(x32.shape, generator=_gen(2))
    xt32 = s.add_noise(x32, n32, 300)
    assert xt32.dtype == torch.float32 and xt32.shape == x32.shape
    torch.testing.assert_close(s.predict_x0(xt32, n32, 300), x32, atol=1e-5, rtol=0)


def test_min_snr_weights():
    s = DDPMScheduler(1000, "linear")
    t = torch.arange(0, 1000, 37)
    w = s.min_snr_weights(t, gamma=1.0)
    a = s.alphas_cumprod[t]
    snr = a / (1 - a)
    assert w.shape == t.shape and w.dtype == torch.float32
    assert (w <= 1).all() and (w > 0).all()
    torch.testing.assert_close(w, (torch.minimum(snr, torch.tensor(1.0, dtype=torch.float64)) / snr).float())
    assert w[0].item() < 1 and w[-1].item() == 1.0  # low noise is down-weighted, high noise untouched


@pytest.mark.parametrize("num_steps,start", [(50, None), (1, None), (1000, None), (7, 300), (301, 300), (1, 0)])
def test_timesteps_for(num_steps, start):
    s = DDPMScheduler(1000)
    ts = s.timesteps_for(num_steps, start)
    assert ts.shape == (num_steps,) and ts.dtype == torch.long
    assert ts[0].item() == (999 if start is None else start)
    assert (torch.diff(ts) < 0).all() and ts.min() >= 0
    if num_steps > 1:
        assert ts[-1].item() == 0
    with pytest.raises(ValueError):
        s.timesteps_for(0)
    with pytest.raises(ValueError):
        s.timesteps_for(10, start=1000)


def _oracle(s: DDPMScheduler, x0: torch.Tensor):
    return lambda x_t, t: s.predict_eps(x_t, x0, t)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("num_steps", [1, 2, 10, 50])
def test_ddim_oracle_recovers_x0(schedule, num_steps):
    s = DDPMScheduler(1000, schedule)
    x0 = _x0()
    out = s.sample(_oracle(s, x0), x0.shape, num_steps, generator=_gen(3), dtype=torch.float64)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_ddim_oracle_float32_linear():
    s = DDPMScheduler(1000, "linear")
    x0 = _x0(dtype=torch.float32)
    out = s.sample(_oracle(s, x0), x0.shape, 20, generator=_gen(3))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_partial_noising_oracle_returns_x0(schedule):
    s = DDPMScheduler(1000, schedule)
    x0 = _x0((2, 1, 6, 6, 6))
    for t_start, steps in ((250, 5), (100, 1), (999, 20)):
        out = s.sample(_oracle(s, x0), None, steps, generator=_gen(4), x_start=x0, t_start=t_start)
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    # ancestral too: the oracle keeps every x̂₀ exact, so added noise never reaches the result
    out = s.sample(_oracle(s, x0), None, 5, generator=_gen(4), x_start=x0, t_start=250, eta=1.0)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_ancestral_sampling_seeded():
    s = DDPMScheduler(100, "linear", 1e-3, 0.05)

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a fixed, non-oracle ε-model
        return 0.5 * x_t

    def run(seed: int) -> torch.Tensor:
        return s.sample(model, (2, 1, 8, 8), 10, generator=_gen(seed), eta=1.0)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # eta=0 with the same starting noise is deterministic and differs from eta=1
    d = s.sample(model, (2, 1, 8, 8), 10, generator=_gen(5), eta=0.0)
    assert torch.isfinite(d).all() and not torch.allclose(a, d)


def test_step_eta1_consecutive_is_ddpm_posterior():
    """With consecutive timesteps, η=1 DDIM equals the DDPM ancestral step mean and variance β̃_t."""
    s = DDPMScheduler(1000, "linear")
    x0 = _x0()
    t = 500
    xt = s.add_noise(x0, torch.randn(x0.shape, generator=_gen(7), dtype=torch.float64), t)
    eps = s.predict_eps(xt, x0, t)
    a_t, a_p, beta = s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]
    mean = (a_p.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_p) / (1 - a_t)) * xt
    var = (1 - a_p) / (1 - a_t) * beta
    z = torch.randn(x0.shape, generator=_gen(8), dtype=torch.float64)
    out = s.step(eps, t, t - 1, xt, eta=1.0, generator=_gen(8))
    torch.testing.assert_close(out, mean + var.sqrt() * z, atol=1e-10, rtol=0)


def test_step_clip_x0():
    s = DDPMScheduler(1000, "linear")
    xt = torch.full((1, 1, 4, 4), 5.0, dtype=torch.float64)
    out = s.step(torch.zeros_like(xt), 10, -1, xt, clip_x0=(0.0, 1.0))
    assert out.max().item() <= 1.0 and out.min().item() >= 0.0


@pytest.mark.parametrize("strength", [0.1, 0.5])
def test_offset_noise_statistics(strength):
    n = DDPMScheduler.offset_noise((2000, 2, 32, 32), strength, generator=_gen(9))
    assert n.shape == (2000, 2, 32, 32) and n.dtype == torch.float32
    offsets = n.mean(dim=(2, 3))  # offset + mean of 1024 iid N(0, 1)
    offset_var = offsets.var().item() - 1 / 1024
    assert offset_var == pytest.approx(strength**2, rel=0.15)
    assert torch.equal(n, DDPMScheduler.offset_noise((2000, 2, 32, 32), strength, generator=_gen(9)))
    plain = DDPMScheduler.offset_noise((2000, 2, 32, 32), 0.0, generator=_gen(9))
    assert abs(plain.mean(dim=(2, 3)).var().item() - 1 / 1024) < 2e-4
