"""Temporal modules: attention over frames after every UNet layer, plus EMO's speed layers.

Placement follows AnimateDiff: one module after each (resnet, attention) layer of every down and
up block and after the mid block's attention, so diffusers ``MotionAdapter`` weights map one to
one. Each module is diffusers' ``AnimateDiffTransformer3D`` (self-attention over ``(b h w) f c``
with sinusoidal frame positions; its output projection is zero-initialised here) followed by a
``SpeedAttention`` (cross-attention from each frame's tokens to its speed tokens, zero-initialised
output). Motion frames, whose features at the same site come from ReferenceNet, are prepended along
the frame axis for the temporal attention and dropped afterwards.

The modules attach to a diffusers UNet through PyTorch forward hooks on the site layers, all
registered by ``TemporalLayers.attach``; the hooks are small callable objects (not closures) so
``copy.deepcopy`` of the model (EMA) rewires them to the copy.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from einops import rearrange
from torch import nn

from emokit.models.config import EMOConfig
from emokit.models.context import ContextSlot


def temporal_sites(unet: UNet2DConditionModel, mid: bool = True) -> dict[str, nn.Module]:
    """The UNet layers a temporal module follows, keyed ``down_i_j`` / ``mid_0`` / ``up_i_j``."""
    sites: dict[str, nn.Module] = {}
    for prefix, blocks in (("down", unet.down_blocks), ("up", unet.up_blocks)):
        for i, block in enumerate(blocks):
            layers = getattr(block, "attentions", None) or block.resnets
            for j, layer in enumerate(layers):
                sites[f"{prefix}_{i}_{j}"] = layer
    if mid and getattr(unet.mid_block, "attentions", None):
        sites["mid_0"] = unet.mid_block.attentions[0]
    order = [k for k in sites if k.startswith("down")] + (["mid_0"] if "mid_0" in sites else [])
    order += [k for k in sites if k.startswith("up")]
    return {k: sites[k] for k in order}


def site_channels(layer: nn.Module) -> int:
    """Output channels of a site layer (Transformer2DModel or ResnetBlock2D)."""
    channels = getattr(layer, "out_channels", None) or getattr(layer, "in_channels", None)
    if not isinstance(channels, int):
        raise TypeError(f"cannot tell the channels of {type(layer).__name__}")
    return channels


def _unwrap(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample  # Transformer2DModelOutput


def _rewrap(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    output.sample = tensor
    return output


class SpeedAttention(nn.Module):
    """Cross-attention from every token of a frame to that frame's speed tokens (residual)."""

    def __init__(self, channels: int, speed_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(
            query_dim=channels,
            cross_attention_dim=speed_dim,
            heads=heads,
            dim_head=channels // heads,
            out_bias=True,
        )
        out = cast(nn.Linear, self.attn.to_out[0])
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)

    def forward(self, x: torch.Tensor, speed_tokens: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(x, "bf c h w -> bf (h w) c")
        out = self.attn(self.norm(tokens), encoder_hidden_states=speed_tokens.to(x.dtype))
        return x + rearrange(out, "bf (h w) c -> bf c h w", h=h, w=w)


class TemporalModule(nn.Module):
    """AnimateDiff temporal transformer over [motion frames ‖ clip frames] + speed attention."""

    def __init__(self, channels: int, config: EMOConfig) -> None:
        super().__init__()
        heads = config.temporal_heads
        self.motion = AnimateDiffTransformer3D(
            num_attention_heads=heads,
            attention_head_dim=channels // heads,
            in_channels=channels,
            norm_num_groups=config.temporal_norm_groups,
            cross_attention_dim=None,
            activation_fn="geglu",
            attention_bias=False,
            double_self_attention=True,
            positional_embeddings="sinusoidal",
            num_positional_embeddings=config.temporal_max_frames,
        )
        nn.init.zeros_(self.motion.proj_out.weight)
        nn.init.zeros_(self.motion.proj_out.bias)
        self.speed = SpeedAttention(channels, config.speed_dim, heads)

    def forward(
        self,
        x: torch.Tensor,
        frames: int,
        motion: torch.Tensor | None = None,
        speed_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [(b f), c, h, w], motion [(b n), c, h, w], speed_tokens [(b f), t, d] → like x."""
        b = x.shape[0] // frames
        n = 0 if motion is None else motion.shape[0] // b
        if motion is not None and n:
            clip = rearrange(x, "(b f) c h w -> b f c h w", f=frames)
            prev = rearrange(motion.to(x.dtype), "(b n) c h w -> b n c h w", n=n)
            x = rearrange(torch.cat([prev, clip], dim=1), "b t c h w -> (b t) c h w")
        y = self.motion(x, num_frames=n + frames)
        if n:
            y = rearrange(y, "(b t) c h w -> b t c h w", t=n + frames)[:, n:]
            y = rearrange(y, "b f c h w -> (b f) c h w")
        if speed_tokens is not None:
            y = self.speed(y, speed_tokens)
        return y


class _TemporalHook:
    """Forward hook: run the site's temporal module on the layer output (callable object)."""

    def __init__(self, key: str, layers: TemporalLayers, slot: ContextSlot) -> None:
        self.key, self.layers, self.slot = key, layers, slot

    def __call__(self, module: nn.Module, args: tuple, output: object) -> object:
        ctx = self.slot.active
        if ctx is None or ctx.recording or not ctx.temporal:
            return None
        motion = None if ctx.motion is None else ctx.motion[self.key]
        inputs = (_unwrap(output), ctx.frames, motion, ctx.speed_tokens)
        layer = self.layers[self.key]
        if self.layers.gradient_checkpointing and torch.is_grad_enabled():
            y = torch.utils.checkpoint.checkpoint(layer, *inputs, use_reentrant=False)
        else:
            y = layer(*inputs)
        return _rewrap(output, y)


class _SiteRecorder:
    """Forward hook on ReferenceNet: keep each site's output (motion-frame features)."""

    def __init__(self, key: str, slot: ContextSlot) -> None:
        self.key, self.slot = key, slot

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        ctx = self.slot.active
        if ctx is not None and ctx.recording:
            ctx.record_sites[self.key] = _unwrap(output)


class TemporalLayers(nn.ModuleDict):
    """All temporal modules of the backbone, keyed by site (``down_0_0``, ``mid_0``, ...)."""

    def __init__(self, unet: UNet2DConditionModel, config: EMOConfig) -> None:
        sites = temporal_sites(unet, mid=config.temporal_mid)
        super().__init__({k: TemporalModule(site_channels(m), config) for k, m in sites.items()})
        self.mid = config.temporal_mid
        self.gradient_checkpointing = False

    def attach(
        self, backbone: UNet2DConditionModel, reference_net: UNet2DConditionModel, slot: ContextSlot
    ) -> None:
        """Register every hook: temporal modules on the backbone, recorders on ReferenceNet.

        Hooks an earlier ``attach`` left on these layers are removed first, so reassembling a model
        from parts that already served one (``emokit.models.parts.join_parts``) runs each module once.
        """
        for key, layer in temporal_sites(backbone, mid=self.mid).items():
            _drop_hooks(layer)
            layer.register_forward_hook(_TemporalHook(key, self, slot))
        for key, layer in temporal_sites(reference_net, mid=self.mid).items():
            _drop_hooks(layer)
            layer.register_forward_hook(_SiteRecorder(key, slot))

    def speed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, param) of the speed layers inside the temporal modules."""
        return [(n, p) for n, p in self.named_parameters() if ".speed." in f".{n}"]


def _drop_hooks(layer: nn.Module) -> None:
    """Remove the temporal hooks / site recorders registered on ``layer`` (others stay)."""
    for handle, hook in list(layer._forward_hooks.items()):
        if isinstance(hook, _TemporalHook | _SiteRecorder):
            del layer._forward_hooks[handle]
