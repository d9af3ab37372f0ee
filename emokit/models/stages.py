"""Which parameters belong to which EMO part, and which train in each stage (paper §3.3).

- stage 1 (images): backbone spatial layers + ReferenceNet + face locator; ReferenceNet's tail
  (everything after the input of its last self-attention: that block's attention/feed-forward, the
  last proj_out, conv_norm_out, conv_out) cannot reach the backbone without motion frames, so it
  stays frozen (as Animate Anyone does) and every trainable parameter gets a gradient (DDP-safe);
- stage 2 (video): temporal modules + audio-attention (backbone attn2 and its norm) + audio
  projection;
- stage 3 (speed): temporal modules + speed layers (speed attention in the temporal modules and the
  speed encoder) only.
The VAE never trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

from emokit.models.audio_proj import AudioProjection

STAGES = (1, 2, 3)
# How stage 2 opens the audio path (TrainConfig.audio_start); both leave the stage-1 model's
# output unchanged at the first step, see open_audio_path.
AUDIO_STARTS = ("zero_tokens", "zero_output")

# groups: (component attribute, predicate on the parameter name inside it)
_GROUPS = {
    "backbone.spatial": ("backbone", lambda n: not _is_audio_attention(n)),
    "backbone.audio_attention": ("backbone", lambda n: _is_audio_attention(n)),
    "reference_net": ("reference_net", lambda n: True),  # minus reference_tail()
    "face_locator": ("face_locator", lambda n: True),
    "audio_proj": ("audio_proj", lambda n: True),
    "temporal.motion": ("temporal", lambda n: ".speed." not in f".{n}"),
    "temporal.speed": ("temporal", lambda n: ".speed." in f".{n}"),
    "speed_encoder": ("speed_encoder", lambda n: True),
    "vae": ("vae", lambda n: True),
}

STAGE_GROUPS: dict[int, tuple[str, ...]] = {
    1: ("backbone.spatial", "reference_net", "face_locator"),
    2: ("temporal.motion", "backbone.audio_attention", "audio_proj"),
    3: ("temporal.motion", "temporal.speed", "speed_encoder"),
}


class StageError(ValueError):
    """An unknown training stage."""


def _is_audio_attention(name: str) -> bool:
    """Backbone attn2 (audio cross-attention) and the LayerNorm that feeds it."""
    return ".transformer_blocks." in name and (".attn2." in name or ".norm2." in name)


def reference_tail(unet: nn.Module) -> set[str]:
    """ReferenceNet parameters downstream of its last recorded self-attention input."""
    up_blocks = cast(nn.ModuleList, unet.up_blocks)
    last = len(up_blocks) - 1
    attentions = getattr(up_blocks[last], "attentions", None)
    if not attentions:
        raise ValueError("ReferenceNet must end with a cross-attention up block (SD layout)")
    a = len(attentions) - 1
    t = len(attentions[a].transformer_blocks) - 1
    block = f"up_blocks.{last}.attentions.{a}.transformer_blocks.{t}."
    tail = set()
    for name, _ in unet.named_parameters():
        if name.startswith(block) and not name.startswith(f"{block}norm1."):
            tail.add(name)
        elif name.startswith((f"up_blocks.{last}.attentions.{a}.proj_out.", "conv_norm_out.", "conv_out.")):
            tail.add(name)
    return tail


def group_parameters(model: nn.Module, group: str) -> Iterator[tuple[str, nn.Parameter]]:
    """(full name, parameter) of one group, e.g. ``"temporal.speed"``."""
    attr, keep = _GROUPS[group]
    component = getattr(model, attr)
    tail = reference_tail(component) if attr == "reference_net" else set()
    for name, p in component.named_parameters():
        if keep(name) and name not in tail:
            yield f"{attr}.{name}", p


def set_stage(model: nn.Module, stage: int) -> list[nn.Parameter]:
    """Freeze everything, unfreeze the stage's groups; returns the trainable parameters."""
    if stage not in STAGE_GROUPS:
        raise StageError(f"stage must be one of {STAGES}, got {stage!r}")
    model.requires_grad_(False)
    trainable: dict[str, nn.Parameter] = {}
    for group in STAGE_GROUPS[stage]:
        for name, p in group_parameters(model, group):
            p.requires_grad_(True)
            trainable[name] = p
    return list(trainable.values())


def open_audio_path(model: nn.Module, seed: int) -> None:
    """Stage 2's ``audio_start = "zero_output"``: audio tokens that start non-zero, read by
    audio-attention output projections that start at zero.

    Why: with the default zero tokens (the audio projection's last layer at zero), keys and
    values are zero, every query attends uniformly, and the audio can only act as one bias over
    the whole picture until the tokens have grown; the mouth needs a spatially selective effect,
    which then comes second-order and, in a short run, sometimes never (BENCHMARKS "Learning").
    Here the tokens start random (the last layer at PyTorch's default Linear init, drawn from
    ``seed``) and every attn2 ``to_out`` weight starts at zero, so the first step already trains a
    read-out of spatially varying audio attention. The output is the stage-1 model's, exactly:
    stage 1 saw only the null tokens, whose zero values make attn2 emit its ``to_out`` bias
    whatever the weight, and a zero weight emits that same bias for any tokens.
    """
    gen = torch.Generator().manual_seed(seed)
    last = cast(nn.Linear, cast(AudioProjection, model.audio_proj).mlp[-1])
    bound = last.in_features**-0.5  # nn.Linear's default init bound (kaiming uniform, a=√5)
    with torch.no_grad():
        for p in (last.weight, last.bias):
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        for name, p in group_parameters(model, "backbone.audio_attention"):
            if ".attn2.to_out." in name and name.endswith(".weight"):
                p.zero_()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per component plus the sub-groups and ``total`` (sub-groups count in parents)."""
    counts: dict[str, int] = {}
    for attr in (
        "vae",
        "backbone",
        "reference_net",
        "temporal",
        "face_locator",
        "audio_proj",
        "speed_encoder",
    ):
        counts[attr] = sum(p.numel() for p in getattr(model, attr).parameters())
    for group in ("backbone.audio_attention", "temporal.speed"):
        counts[group] = sum(p.numel() for _, p in group_parameters(model, group))
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
