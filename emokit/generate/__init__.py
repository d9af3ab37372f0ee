"""Generation: animate one portrait with a speech track (a diffusers sampler + CFG, clip after clip)."""

from emokit.generate.generator import GenerateError, GenerationResult, Generator, Speech
from emokit.generate.portrait import Portrait, PortraitError, load_portrait
from emokit.generate.sampler import SamplerError, cfg_denoiser, ddim_sample, ddim_timesteps
from emokit.generate.schedulers import make_scheduler, scheduler_names, scheduler_sample

__all__ = [
    "GenerateError",
    "GenerationResult",
    "Generator",
    "Portrait",
    "PortraitError",
    "SamplerError",
    "Speech",
    "cfg_denoiser",
    "ddim_sample",
    "ddim_timesteps",
    "load_portrait",
    "make_scheduler",
    "scheduler_names",
    "scheduler_sample",
]
