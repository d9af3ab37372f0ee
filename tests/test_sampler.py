"""The DDIM sampler and CFG wrapper against diffusers' DDIMScheduler on the same inputs."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from emokit.generate.sampler import (
    SamplerError,
    cfg_denoiser,
    ddim_sample,
    ddim_timesteps,
)

SD15 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)


def _toy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic, t-dependent, non-linear stand-in for a network's eps prediction."""
    return torch.tanh(x * (1 + t / 500)) * 0.7 + 0.01 * t / 1000


def _diffusers_ddim(sched: DDIMScheduler, x_T: torch.Tensor) -> torch.Tensor:
    """The reference: diffusers' own DDIM loop over ``_toy_eps`` (eta 0)."""
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(_toy_eps(x, int(t)), t, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize(
    ("spacing", "offset", "steps"),
    [("trailing", 0, 40), ("trailing", 0, 8), ("leading", 1, 40), ("leading", 0, 25)],
)
def test_timesteps_match_diffusers(spacing: str, offset: int, steps: int) -> None:
    sched = DDIMScheduler(**SD15, timestep_spacing=spacing, steps_offset=offset)
    sched.set_timesteps(steps)
    assert ddim_timesteps(1000, steps, spacing, offset) == sched.timesteps.tolist()


@pytest.mark.parametrize(
    ("spacing", "offset", "set_alpha_to_one"), [("trailing", 0, True), ("leading", 1, False)]
)
def test_ddim_sample_matches_diffusers_loop(spacing: str, offset: int, set_alpha_to_one: bool) -> None:
    steps = 20
    sched = DDIMScheduler(
        **SD15, timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=set_alpha_to_one
    )
    sched.set_timesteps(steps)
    x_T = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _diffusers_ddim(sched, x_T)

    ours = ddim_sample(
        _toy_eps,
        x_T,
        ddim_timesteps(1000, steps, spacing, offset),
        sched.alphas_cumprod,
        final_alpha_cumprod=float(sched.final_alpha_cumprod),
    )
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ours, x_T)


def test_ddim_with_eta_matches_diffusers_given_same_noise() -> None:
    steps = 10
    sched = DDIMScheduler(**SD15, timestep_spacing="trailing")
    sched.set_timesteps(steps)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    # ddim_sample draws noise from the generator once per step, in order; replay the same draws.
    g = torch.Generator().manual_seed(7)
    ref = x_T.clone()
    for t in sched.timesteps:
        noise = torch.randn(ref.shape, generator=g)
        ref = sched.step(_toy_eps(ref, int(t)), t, ref, eta=0.5, variance_noise=noise).prev_sample

    ours = ddim_sample(
        _toy_eps,
        x_T,
        ddim_timesteps(1000, steps),
        sched.alphas_cumprod,
        eta=0.5,
        generator=torch.Generator().manual_seed(7),
    )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_cfg_batches_cond_and_uncond_in_one_forward() -> None:
    calls: list[tuple[int, list[bool]]] = []

    def model_fn(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], drop.tolist()))
        assert t.shape == (x.shape[0],)
        # conditional rows predict x + 1, unconditional rows predict x
        return x + (~drop).float().view(-1, *[1] * (x.dim() - 1))

    x = torch.randn(3, 2, 4, 4)
    eps = cfg_denoiser(model_fn, 3.5)(x, 500)
    assert calls == [(6, [False] * 3 + [True] * 3)]
    torch.testing.assert_close(eps, x + 3.5)  # uncond + 3.5 · (cond − uncond)

    calls.clear()
    eps1 = cfg_denoiser(model_fn, 1.0)(x, 500)
    assert calls == [(3, [False] * 3)]  # scale 1: conditional only, no wasted half batch
    torch.testing.assert_close(eps1, x + 1)


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(SamplerError, match="steps must be"):
        ddim_timesteps(1000, 0)
    with pytest.raises(SamplerError, match="spacing"):
        ddim_timesteps(1000, 10, "linspace-ish")
    with pytest.raises(SamplerError, match="descending"):
        ddim_sample(_toy_eps, torch.zeros(1), [1, 5], torch.linspace(0.99, 0.01, 1000))


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_v_and_x0_prediction_with_zero_terminal_snr_match_diffusers(kind: str) -> None:
    """A v or x0 model sampled from ᾱ = 0 (zero terminal SNR): the first step is exact, no 1/√ᾱ."""
    steps = 10
    sched = DDIMScheduler(
        **SD15,
        timestep_spacing="trailing",
        prediction_type=kind,
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
    )
    sched.set_timesteps(steps)
    assert float(sched.alphas_cumprod[int(sched.timesteps[0])]) < 1e-6  # sampling starts at SNR ~0
    x_T = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = _diffusers_ddim(sched, x_T)

    ours = ddim_sample(
        _toy_eps,
        x_T,
        ddim_timesteps(1000, steps, "trailing"),
        sched.alphas_cumprod,
        prediction_type=kind,
    )
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_eps_model_refused_at_zero_snr() -> None:
    from emokit.generate.sampler import eps_and_x0

    with pytest.raises(SamplerError, match="alpha_bar = 0"):
        eps_and_x0(torch.zeros(1), torch.zeros(1), 0.0, "epsilon")
