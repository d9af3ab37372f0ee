"""Audio projection: per-frame wav2vec features → a few audio tokens for the audio-attention.

Each frame sees the ±``audio_window`` frames around it (the real neighbours when the input carries
them, see ``window``; else edge-padded) of all ``audio_layers`` hidden
states (EMO / Hallo), flattened and mapped by an MLP to ``audio_tokens`` tokens of the UNet's
cross-attention width. The last layer starts at zero so the tokens begin equal to the "no audio"
tokens (zeros): adding audio in stage 2 leaves the stage-1 model's output unchanged at first.
A diffusers model: its constructor arguments (EMOConfig's names) are its ``config.json``.
"""

from __future__ import annotations

from typing import cast

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from emokit.models.window import frame_window


class AudioProjection(ModelMixin, ConfigMixin):
    """[b, f (+2·audio_window context), L, D] wav2vec tokens → [b, f, audio_tokens, width]."""

    @register_to_config
    def __init__(
        self,
        audio_layers: int = 12,
        audio_dim: int = 768,
        audio_window: int = 2,
        audio_hidden: int = 1024,
        audio_tokens: int = 32,
        cross_attention_dim: int = 768,
    ) -> None:
        super().__init__()
        self.window = audio_window
        self.layers, self.dim = audio_layers, audio_dim
        self.tokens, self.width = audio_tokens, cross_attention_dim
        inputs = (2 * self.window + 1) * self.layers * self.dim
        self.mlp = nn.Sequential(
            nn.Linear(inputs, audio_hidden),
            nn.SiLU(),
            nn.Linear(audio_hidden, audio_hidden),
            nn.SiLU(),
            nn.Linear(audio_hidden, self.tokens * self.width),
        )
        last = cast(nn.Linear, self.mlp[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def null_tokens(self, b: int, f: int) -> torch.Tensor:
        """The "no audio" tokens used for classifier-free guidance and audio-free stage 1."""
        weight = cast(nn.Linear, self.mlp[-1]).weight
        return weight.new_zeros(b, f, self.tokens, self.width)

    def forward(
        self, audio: torch.Tensor, drop: torch.Tensor | None = None, frames: int | None = None
    ) -> torch.Tensor:
        """``drop`` (bool [b]) replaces those samples' tokens by the null tokens; ``frames``: the
        clip length when ``audio`` carries ±audio_window context rows."""
        if audio.ndim != 4 or tuple(audio.shape[2:]) != (self.layers, self.dim):
            raise ValueError(f"audio must be [b, f, {self.layers}, {self.dim}], got {tuple(audio.shape)}")
        weight = cast(nn.Linear, self.mlp[0]).weight
        windows = frame_window(audio.to(weight.dtype), self.window, frames)  # b f w l d
        tokens = self.mlp(rearrange(windows, "b f w l d -> b f (w l d)"))
        tokens = rearrange(tokens, "b f (t c) -> b f t c", t=self.tokens)
        if drop is not None:
            tokens = torch.where(drop.to(torch.bool)[:, None, None, None], 0.0, tokens)
        return tokens
