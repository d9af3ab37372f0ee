"""PixelLatent: a lossless space-to-depth "autoencoder" (p×p pixel patches → channels).

Why it exists: the tiny preset cannot ship trained VAE weights (nothing can be downloaded) and a
random AutoencoderKL decodes anything to noise, so no training can make its videos look like a
face. Folding each p×p patch of RGB into 3·p² channels is exact (decode(encode(x)) == x bit for
bit: it is a permutation of the values and a scale by a power of two), needs no training, costs
nothing, and keeps a latent grid p times smaller than the image, which is what the UNet needs.
The price is many channels (48 at p = 4) and no perceptual compression: fine for a small model
fitted to one speaker on a CPU, not a replacement for SD1.5's VAE at full scale.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange


class PixelLatent(ModelMixin, ConfigMixin):
    """[B,3,H,W] in [-1,1] ↔ [B,3·p²,H/p,W/p]; no parameters, exact both ways. A diffusers model
    (``config.json`` = patch and scale) so a pipeline folder loads it like a VAE."""

    @register_to_config
    def __init__(self, patch: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.patch, self.scale = patch, scale

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, subfolder: str | None = None, **kwargs: Any):
        """The folder's ``config.json`` alone: there are no weights (diffusers writes no weight file
        for a model without tensors), so weight options (dtype, variant, ...) do not apply."""
        hub = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "revision", "token") if k in kwargs}
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder, **hub)
        return cls.from_config(config)

    # No tensors to look at (diffusers' ModelMixin.device/dtype fail on a model without any): the
    # transform works on whatever device and dtype its input has.
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.patch
        return rearrange(pixels, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = self.patch
        return rearrange(latents / self.scale, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)
