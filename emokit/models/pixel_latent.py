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

import torch
from einops import rearrange
from torch import nn


class PixelLatent(nn.Module):
    """[B,3,H,W] in [-1,1] ↔ [B,3·p²,H/p,W/p]; no parameters, exact both ways."""

    def __init__(self, patch: int, scale: float = 1.0) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.patch, self.scale = patch, scale

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.patch
        return rearrange(pixels, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=p, p2=p) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        p = self.patch
        return rearrange(latents / self.scale, "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=p, p2=p)
