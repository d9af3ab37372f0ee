"""emokit: audio-driven portrait video (EMO) — dataset pipeline, diffusion model, trainer, generator."""

__version__ = "0.1.0"
