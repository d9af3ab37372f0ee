"""Reference-attention as diffusers attention processors.

ReferenceNet's self-attention layers (attn1) get a ``RecordingAttnProcessor`` that keeps their
input tokens; the backbone's matching attn1 layers get a ``ReferenceAttnProcessor`` whose keys and
values are the frame's own tokens followed by those reference tokens (Animate Anyone / EMO
reference-attention). The backbone's attn2 keeps diffusers' plain processor: its
``encoder_hidden_states`` are the per-frame audio tokens, which makes it EMO's audio-attention.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import repeat

from emokit.models.context import ContextSlot


def self_attention_names(unet: UNet2DConditionModel) -> list[str]:
    """Processor names of every attn1 (self-attention) layer, in UNet order."""
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


class RecordingAttnProcessor:
    """Plain self-attention that also stores its input tokens in the active context."""

    def __init__(self, name: str, slot: ContextSlot) -> None:
        self.name = name
        self.slot = slot
        self.inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ctx = self.slot.active
        if ctx is not None and ctx.recording:
            ctx.record_tokens[self.name] = hidden_states
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceAttnProcessor:
    """Self-attention over [own tokens ‖ reference tokens]; dropped samples see only their own."""

    def __init__(self, name: str, slot: ContextSlot) -> None:
        self.name = name
        self.slot = slot
        self.inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ctx = self.slot.require()
        if ctx.ref_tokens is None:
            return self.inner(attn, hidden_states, None, attention_mask, temb)
        ref = repeat(ctx.ref_tokens[self.name], "b l c -> (b f) l c", f=ctx.frames)
        if ref.shape[0] != hidden_states.shape[0] or ref.shape[2] != hidden_states.shape[2]:
            raise RuntimeError(
                f"reference tokens {tuple(ref.shape)} do not match {tuple(hidden_states.shape)}"
                f" at {self.name}"
            )
        keys = torch.cat([hidden_states, ref.to(hidden_states.dtype)], dim=1)
        mask = None
        if ctx.ref_drop is not None and bool(ctx.ref_drop.any()):
            keep = repeat(~ctx.ref_drop.to(torch.bool), "b -> (b f) 1 l", f=ctx.frames, l=ref.shape[1])
            own = keep.new_ones(keep.shape[0], 1, hidden_states.shape[1])
            mask = torch.cat([own, keep], dim=2)  # [(b f), 1, own + ref] bool, True = attend
        return self.inner(attn, hidden_states, keys, mask, temb)


def install_reference_attention(
    backbone: UNet2DConditionModel, reference_net: UNet2DConditionModel, slot: ContextSlot
) -> list[str]:
    """Set the recording/reference processors on both UNets; returns the shared layer names."""
    names = self_attention_names(backbone)
    if names != self_attention_names(reference_net):
        raise ValueError("backbone and ReferenceNet must have the same layout")
    backbone.set_attn_processor(
        {
            n: ReferenceAttnProcessor(n, slot) if n in names else AttnProcessor2_0()
            for n in backbone.attn_processors
        }
    )
    reference_net.set_attn_processor(
        {
            n: RecordingAttnProcessor(n, slot) if n in names else AttnProcessor2_0()
            for n in reference_net.attn_processors
        }
    )
    return names
