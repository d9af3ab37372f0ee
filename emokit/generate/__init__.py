"""Generation: animate one portrait with a speech track (DDIM + CFG, clip after clip)."""

from emokit.generate.generator import GenerateError, GenerationResult, Generator, Speech
from emokit.generate.portrait import Portrait, PortraitError, load_portrait
from emokit.generate.sampler import SamplerError, cfg_denoiser, ddim_sample, ddim_timesteps

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
]
