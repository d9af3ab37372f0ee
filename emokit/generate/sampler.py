"""DDIM sampling and classifier-free guidance as small pure functions over a denoiser callable.

k-diffusion style: the sampler knows nothing about the model. A denoiser is any callable
``(x, t) -> model output`` (eps, v or x0, as the model was trained); guidance is a wrapper that turns
a conditional model into such a callable. This keeps the maths testable against diffusers'
``DDIMScheduler`` without building a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
# model_fn(x [B,...], t [B], drop [B] bool) -> eps [B,...]; ``drop`` marks the unconditional rows.
GuidedModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class SamplerError(ValueError):
    """Bad sampler arguments (one-line reason)."""


def ddim_timesteps(
    num_train_timesteps: int, steps: int, spacing: str = "trailing", offset: int = 0
) -> list[int]:
    """Descending training timesteps that DDIM visits in ``steps`` steps.

    "trailing" starts at the last training step (t = T-1), so sampling begins from the noisiest
    level the model was trained on; "leading" is diffusers' default (SD1.5 adds ``offset=1``, its
    ``steps_offset``). Both equal ``DDIMScheduler.set_timesteps`` for the same settings.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise SamplerError(f"steps must be in 1..{num_train_timesteps}, got {steps}")
    if spacing == "trailing":
        ratio = num_train_timesteps / steps
        ts = [round(num_train_timesteps - i * ratio) - 1 for i in range(steps)]
    elif spacing == "leading":
        ratio = num_train_timesteps // steps
        ts = [i * ratio + offset for i in reversed(range(steps))]
    else:
        raise SamplerError(f"unknown timestep spacing {spacing!r} (use 'trailing' or 'leading')")
    if spacing == "trailing" and offset:
        raise SamplerError("offset applies to 'leading' spacing only")
    return ts


def eps_and_x0(
    output: torch.Tensor, x: torch.Tensor, alpha_t: float, prediction_type: str = "epsilon"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from a model output at ᾱ_t: eps itself, v = √ᾱ·eps − √(1−ᾱ)·x0, or x0 ("sample").

    With v, both follow without dividing by √ᾱ_t, so a zero-terminal-SNR step (ᾱ = 0) is exact.
    """
    a = torch.as_tensor(alpha_t, dtype=torch.float64)
    sa, s1a = a.sqrt().to(x.dtype), (1 - a).sqrt().to(x.dtype)
    if prediction_type == "epsilon":
        if alpha_t <= 0:
            raise SamplerError("an eps model cannot be sampled at alpha_bar = 0 (zero terminal SNR)")
        return output, (x - s1a * output) / sa
    if prediction_type == "v_prediction":
        return sa * output + s1a * x, sa * x - s1a * output
    if prediction_type == "sample":
        if alpha_t >= 1:
            raise SamplerError("an x0 model gives no eps at alpha_bar = 1 (no noise)")
        return (x - sa * output) / s1a, output
    raise SamplerError(f"unknown prediction_type {prediction_type!r} (epsilon, v_prediction or sample)")


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha_t: float,
    alpha_prev: float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM update x_t → x_{t_prev} (Song et al. 2021, eq. 12) from an eps prediction (and
    its x0, when the model predicted something else and x0 is known without dividing by √ᾱ_t)."""
    a_t = torch.as_tensor(alpha_t, dtype=torch.float64)
    a_prev = torch.as_tensor(alpha_prev, dtype=torch.float64)
    if x0 is None:
        x0 = (x - (1 - a_t).sqrt().to(x.dtype) * eps) / a_t.sqrt().to(x.dtype)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt().to(x.dtype) * eps
    out = a_prev.sqrt().to(x.dtype) * x0 + direction
    if eta > 0:
        if noise is None:
            raise SamplerError("eta > 0 needs a noise tensor")
        out = out + sigma.to(x.dtype) * noise
    return out


def ddim_sample(
    denoise_eps: Denoiser,
    x_T: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    final_alpha_cumprod: float = 1.0,
    generator: torch.Generator | None = None,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Run DDIM from pure noise ``x_T`` over descending ``timesteps``; returns x_0.

    The step after the last timestep uses ``final_alpha_cumprod`` (1.0 = the clean sample, as
    diffusers' ``set_alpha_to_one=True``). ``eta > 0`` draws fresh noise from ``generator``.
    ``prediction_type``: what the denoiser returns, "epsilon", "v_prediction" or "sample" (x0).
    """
    ac = alphas_cumprod.detach().to("cpu", torch.float64)
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise SamplerError("timesteps must be strictly descending")
    x = x_T
    for i, t in enumerate(ts):
        alpha_t = float(ac[t])
        alpha_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else final_alpha_cumprod
        eps, x0 = eps_and_x0(denoise_eps(x, t).to(x.dtype), x, alpha_t, prediction_type)
        noise = None
        if eta > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x = ddim_step(x, eps, alpha_t, alpha_prev, eta=eta, noise=noise, x0=x0)
    return x


def cfg_denoiser(model_fn: GuidedModel, scale: float) -> Denoiser:
    """Classifier-free guidance: eps = uncond + scale · (cond − uncond), in one batched forward.

    The batch is doubled: the first half conditional, the second half with ``drop`` true (the model
    drops reference and audio there). ``scale == 1`` is plain conditional sampling (one half only).
    """

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        b = x.shape[0]
        if scale == 1.0:
            ts = torch.full((b,), t, dtype=torch.long, device=x.device)
            return model_fn(x, ts, torch.zeros(b, dtype=torch.bool, device=x.device))
        xx = torch.cat([x, x])
        ts = torch.full((2 * b,), t, dtype=torch.long, device=x.device)
        drop = torch.arange(2 * b, device=x.device) >= b
        cond, uncond = model_fn(xx, ts, drop).chunk(2)
        return uncond + scale * (cond - uncond)

    return denoise
