"""Speed encoder: per-frame head-rotation speed → speed tokens for the temporal modules (EMO §3.2).

The speed v (deg/frame) is encoded against d buckets with centres c_k and radii r_k as
s_k = tanh((v − c_k) / r_k · 3), a soft thermometer code; frame i then sees the codes of frames
i−2..i+2 (real neighbours when the input carries them, else edge-padded) and an MLP turns them
into ``speed_tokens`` tokens. A diffusers model: its constructor arguments (EMOConfig's names) are
its ``config.json``.
"""

from __future__ import annotations

from typing import cast

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from emokit.models.window import frame_window


def speed_encoding(speed: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """[...] speeds → [..., d] codes s_k = tanh((v − c_k) / r_k · 3)."""
    return torch.tanh((speed[..., None] - centres) / radii * 3.0)


class SpeedEncoder(ModelMixin, ConfigMixin):
    """[b, f (+2·speed_window context)] deg/frame → [b, f, speed_tokens, speed_dim]."""

    centres: torch.Tensor  # buffers, registered in __init__
    radii: torch.Tensor

    @register_to_config
    def __init__(
        self,
        speed_centres: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0),
        speed_radii: tuple[float, ...] = (0.5,) * 9,
        speed_window: int = 2,
        speed_hidden: int = 512,
        speed_tokens: int = 4,
        speed_dim: int = 768,
    ) -> None:
        super().__init__()
        if len(speed_centres) != len(speed_radii) or any(r <= 0 for r in speed_radii):
            raise ValueError("speed_centres and speed_radii must have the same length, radii > 0")
        self.window = speed_window
        self.tokens, self.dim = speed_tokens, speed_dim
        self.register_buffer("centres", torch.tensor(tuple(speed_centres)))
        self.register_buffer("radii", torch.tensor(tuple(speed_radii)))
        inputs = (2 * self.window + 1) * len(speed_centres)
        self.mlp = nn.Sequential(
            nn.Linear(inputs, speed_hidden),
            nn.SiLU(),
            nn.Linear(speed_hidden, self.tokens * self.dim),
        )

    def forward(self, speed: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """``frames``: the clip length when ``speed`` carries ±speed_window context rows."""
        if speed.ndim != 2:
            raise ValueError(f"speed must be [b, f] degrees per frame, got {tuple(speed.shape)}")
        weight = cast(nn.Linear, self.mlp[0]).weight
        codes = speed_encoding(
            speed.to(weight.dtype), self.centres.to(weight.dtype), self.radii.to(weight.dtype)
        )
        windows = frame_window(codes, self.window, frames)  # b f w d
        tokens = self.mlp(rearrange(windows, "b f w d -> b f (w d)"))
        return rearrange(tokens, "b f (t c) -> b f t c", t=self.tokens)
