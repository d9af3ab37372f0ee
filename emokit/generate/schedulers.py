"""Sampling with any diffusers scheduler: DDIM (EMO's), ancestral DDPM, DPM-Solver++, UniPC or Euler.

The run's training schedule (a ``DDPMScheduler`` saved next to every checkpoint) fixes the betas
and what the model predicts; a sampling scheduler is built from that config with
``XScheduler.from_config`` so the solvers see exactly the noise levels the model was trained on.
``scheduler_sample`` is the k-diffusion style loop: a small pure function over a denoiser
callable (the CFG closure of ``emokit.generate.sampler``) that only calls the scheduler's
``set_timesteps`` / ``scale_model_input`` / ``step``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from emokit.generate.sampler import Denoiser, SamplerError
from emokit.train.noise import PREDICTION_TYPES

log = logging.getLogger(__name__)

# name → (class, settings that make it the solver the name promises, whatever the saved config says)
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    # EMO's sampler; set_alpha_to_one: the last step lands on the clean sample (as ddim_sample).
    "ddim": (DDIMScheduler, {"set_alpha_to_one": True, "clip_sample": False, "thresholding": False}),
    # Ancestral DDPM (DDIM with eta = 1): each step draws fresh noise from the seed's generator.
    # Its output is a draw, not the ODE's image of x_T; on pipelines/learn.toml's tiny model it
    # is +0.16-0.18 dB over DDIM at 10 steps, the mouth alike (BENCHMARKS.md, "Learning").
    "ddpm": (DDPMScheduler, {"variance_type": "fixed_small", "clip_sample": False, "thresholding": False}),
    # DPM-Solver++ (2M): multistep, data prediction, similar quality in ~20 steps.
    "dpmpp": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "variance_type": None, "thresholding": False},
    ),
    "unipc": (UniPCMultistepScheduler, {"predict_x0": True, "solver_order": 2, "thresholding": False}),
    # Deterministic Euler (s_churn 0) in σ space; at zero terminal SNR diffusers starts it from
    # ᾱ_T = 2^-24 (σ_max = 4096): scale_model_input divides the σ-scaled latents back to unit
    # variance, so the model sees what it was trained on, and the step is DDIM's up to σ_T = 4096.
    "euler": (EulerDiscreteScheduler, {}),
}
# samplers whose output is a draw, not the deterministic solution of the probability-flow ODE
STOCHASTIC = frozenset({"ddpm"})
SPACINGS = ("leading", "trailing", "linspace")


def scheduler_names() -> tuple[str, ...]:
    """The names ``--scheduler`` accepts."""
    return tuple(SCHEDULERS)


def check_scheduler_name(name: str) -> str:
    """``name`` itself, or a one-line ``SamplerError`` naming the choices."""
    if name not in SCHEDULERS:
        raise SamplerError(f"unknown scheduler {name!r} (use {', '.join(SCHEDULERS)})")
    return name


def make_scheduler(
    name: str,
    train_scheduler_config: Mapping[str, Any],
    prediction_type: str | None = None,
    timestep_spacing: str | None = None,
) -> SchedulerMixin:
    """The sampling scheduler ``name`` over a run's training schedule (``DDPMScheduler.config``).

    ``prediction_type`` / ``timestep_spacing`` default to the saved config's. A zero-terminal-SNR
    run (``rescale_betas_zero_snr``) samples from t = T-1, the pure-noise level it was trained on:
    a saved "leading" spacing (DDPM's default, which never visits T-1; diffusers warns about it)
    becomes "trailing", and an explicit "leading" is refused.
    """
    cls, fixed = SCHEDULERS[check_scheduler_name(name)]
    config = dict(train_scheduler_config)
    kind = prediction_type or str(config.get("prediction_type", "epsilon"))
    if kind not in PREDICTION_TYPES:
        raise SamplerError(f"prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")
    zero_snr = bool(config.get("rescale_betas_zero_snr", False))
    spacing = timestep_spacing or str(config.get("timestep_spacing", "leading"))
    if spacing not in SPACINGS:
        raise SamplerError(f"unknown timestep spacing {spacing!r} (use {', '.join(SPACINGS)})")
    if zero_snr and spacing == "leading":
        if timestep_spacing is not None:
            raise SamplerError(
                "timestep spacing 'leading' never visits t = T-1, the pure-noise level a "
                "zero-terminal-SNR run starts from; use 'trailing'"
            )
        spacing = "trailing"
    if kind == "epsilon" and zero_snr:
        raise SamplerError("an eps model cannot be sampled at zero terminal SNR (use v_prediction or sample)")
    # As keyword arguments: from_config drops config keys listed in "_use_default_values"
    # (DDPM's default "leading" spacing among them), but keywords always win.
    return cls.from_config(config, **fixed, prediction_type=kind, timestep_spacing=spacing)


def schedule_config(alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> dict[str, Any]:
    """A training-scheduler config carrying exactly these ᾱ_t (as ``trained_betas``), for
    generators built from parts (a model and its ᾱ, no saved run). ᾱ_T = 0 marks zero terminal
    SNR, so the solvers get diffusers' own handling of it (re-rescaling zero-SNR betas is a no-op)."""
    ac = alphas_cumprod.detach().to("cpu", torch.float64)
    prev = torch.cat([ac.new_ones(1), ac[:-1]])
    betas = (1 - ac / prev).clamp(0, 1)
    return {
        "num_train_timesteps": len(ac),
        "trained_betas": betas.tolist(),
        "prediction_type": prediction_type,
        "rescale_betas_zero_snr": bool(ac[-1] == 0),
        "clip_sample": False,
        "steps_offset": 1,
    }


def scheduler_sample(
    denoise: Denoiser,
    scheduler: SchedulerMixin,
    latents: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise unit-variance noise ``latents`` in ``steps`` scheduler steps; returns x_0.

    The noise is scaled by ``init_noise_sigma`` (σ-space solvers such as Euler start at σ_max)
    and every model input by ``scale_model_input``; ``generator`` reaches ``step`` only where the
    scheduler draws noise there. Resets the scheduler's multistep state, so one scheduler object
    serves clip after clip.
    """
    if steps < 1:
        raise SamplerError(f"steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps, device=latents.device)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = denoise(scheduler.scale_model_input(x, t), round(float(t)))
        x = scheduler.step(out.to(x.dtype), t, x, **extra).prev_sample
    return x
