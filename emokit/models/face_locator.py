"""Face locator: a light conv encoder of the face-region mask, added to the noisy latent.

diffusers' ``ControlNetConditioningEmbedding`` is exactly this shape of network (strided 3x3 convs,
SiLU, zero-initialised last conv), so it is composed rather than rewritten. A diffusers model
(``ModelMixin``/``ConfigMixin``): its constructor arguments are its ``config.json``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from diffusers.models.modeling_utils import ModelMixin


class FaceLocator(ModelMixin, ConfigMixin):
    """Pixel-space 0/1 mask [b, 1, H, W] → latent-sized offset [b, 4, H/8, W/8] (zero at init)."""

    @register_to_config
    def __init__(
        self, latent_channels: int = 4, face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)
    ) -> None:
        super().__init__()
        self.encoder = ControlNetConditioningEmbedding(
            conditioning_embedding_channels=latent_channels,
            conditioning_channels=1,
            block_out_channels=tuple(face_locator_channels),
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)
