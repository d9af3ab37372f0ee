"""Face locator: a light conv encoder of the face-region mask, added to the noisy latent.

diffusers' ``ControlNetConditioningEmbedding`` is exactly this shape of network (strided 3x3 convs,
SiLU, zero-initialised last conv), so it is composed rather than rewritten.
"""

from __future__ import annotations

import torch
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from torch import nn

from emokit.models.config import EMOConfig


class FaceLocator(nn.Module):
    """Pixel-space 0/1 mask [b, 1, H, W] → latent-sized offset [b, 4, H/8, W/8] (zero at init)."""

    def __init__(self, config: EMOConfig) -> None:
        super().__init__()
        self.encoder = ControlNetConditioningEmbedding(
            conditioning_embedding_channels=config.latent_channels,
            conditioning_channels=1,
            block_out_channels=config.face_locator_channels,
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)
