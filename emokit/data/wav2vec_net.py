"""The Wav2Vec2 network in plain torch, reading Hugging Face checkpoints (hub id or local folder).

Why not transformers' Wav2Vec2Model: importing transformers costs ~2.7 s of CPU on top of torch,
paid by every `emokit label` and `emokit generate` run, for a model that is ~100 lines of torch.
This module reads the same files (config.json, model.safetensors or pytorch_model.bin, of a
Wav2Vec2Model or Wav2Vec2ForCTC checkpoint) and computes the same hidden states;
tests/test_wav2vec.py checks it against transformers on saved random models of both layouts
(wav2vec2-base's GroupNorm + post-LN, and the "stable layer norm" pre-LN of the large models).

Inference only: no dropout, masking, adapters or padding masks (emokit feeds unpadded chunks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from emokit.data.audio_model import WEIGHT_FILES

__all__ = ["Wav2Vec2Config", "Wav2Vec2Net", "resolve_files"]

_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass(frozen=True)
class Wav2Vec2Config:
    """The config.json fields the network needs (defaults = transformers' Wav2Vec2Config)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    add_adapter: bool = False
    emokit_random_init: bool = False  # set by emokit's savers of random test/benchmark models

    @classmethod
    def from_json(cls, path: Path) -> Wav2Vec2Config:
        raw = json.loads(Path(path).read_text())
        model_type = raw.get("model_type", "wav2vec2")
        if model_type != "wav2vec2":  # HuBERT, WavLM, data2vec...: other layers or weight names
            raise ValueError(
                f"{path}: model_type {model_type!r} is not implemented; emokit loads Wav2Vec2 "
                f"checkpoints (model_type 'wav2vec2') only"
            )
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
        cfg = cls(**kw)
        if cfg.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm {cfg.feat_extract_norm!r} is not 'group' or 'layer'")
        for act in (cfg.hidden_act, cfg.feat_extract_activation):
            if act not in _ACT:
                raise ValueError(f"unsupported activation {act!r}")
        return cfg


class _ConvLayer(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config, i: int) -> None:
        super().__init__()
        c_in = cfg.conv_dim[i - 1] if i > 0 else 1
        c_out = cfg.conv_dim[i]
        self.conv = nn.Conv1d(c_in, c_out, cfg.conv_kernel[i], cfg.conv_stride[i], bias=cfg.conv_bias)
        self.norm_kind = cfg.feat_extract_norm if (cfg.feat_extract_norm == "layer" or i == 0) else None
        self.layer_norm: nn.Module
        if self.norm_kind == "group":  # wav2vec2-base: one GroupNorm (a group per channel), layer 0
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif self.norm_kind == "layer":
            self.layer_norm = nn.LayerNorm(c_out)
        self.act = _ACT[cfg.feat_extract_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = rearrange(self.layer_norm(rearrange(x, "b c t -> b t c")), "b t c -> b c t")
        return self.act(x)


class _Attention(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        q, k, v = (
            rearrange(p(x), "b t (h e) -> b h t e", h=self.heads)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b h t e -> b t (h e)"))


class _FeedForward(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _ACT[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class _Layer(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.pre_norm = cfg.do_stable_layer_norm
        self.attention = _Attention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = _FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:  # "stable layer norm" (large models)
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _PositionalConv(nn.Module):
    """Grouped conv over time with weight norm (stored as g and v; dim 2 = the kernel axis).

    Inference only: the loader folds g·v/‖v‖ into one weight (the norm cost 5 % of a forward)."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        d, k, g = cfg.hidden_size, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, k))
        self.weight_v = nn.Parameter(torch.zeros(d, d // g, k))
        self.bias = nn.Parameter(torch.zeros(d))
        self.groups, self.trim = g, 1 if k % 2 == 0 else 0
        self.act = _ACT[cfg.feat_extract_activation]
        self.folded = False

    def fold(self) -> None:
        """Store the normalised weight in weight_v; forward then uses it as it is."""
        with torch.no_grad():
            v = self.weight_v
            v.copy_(self.weight_g * v / v.norm(dim=(0, 1), keepdim=True))
        self.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        v = self.weight_v
        weight = v if self.folded else self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)
        y = F.conv1d(
            rearrange(x, "b t d -> b d t"), weight, self.bias, padding=v.shape[-1] // 2, groups=self.groups
        )
        if self.trim:
            y = y[..., : -self.trim]
        return rearrange(self.act(y), "b d t -> b t d")


class Wav2Vec2Net(nn.Module):
    """Raw 16 kHz audio [B, samples] → hidden states [L + 1, B, tokens, D]: 0 = the input to
    layer 1 (CNN features + positional conv), i = the output of layer i."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        if config.add_adapter:
            raise ValueError("adapter layers are not supported (they change the token rate)")
        self.config = config
        self.conv_layers = nn.ModuleList(_ConvLayer(config, i) for i in range(len(config.conv_dim)))
        self.projection_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.pos_conv = _PositionalConv(config)
        self.encoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def output_tokens(self, samples: int) -> int:
        """Tokens the conv stack makes of ``samples`` samples."""
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            samples = math.floor((samples - k) / s) + 1
        return samples

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        x = self.projection(self.projection_norm(rearrange(x, "b c t -> b t c")))
        x = x + self.pos_conv(x)
        if not self.config.do_stable_layer_norm:
            x = self.encoder_norm(x)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        # Pre-LN models end with encoder_norm; like transformers >= 5's hidden_states, state L
        # here is the last layer's own output (the norm only makes last_hidden_state).
        return torch.stack(states)

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], assign: bool = False) -> None:
        """Load a Wav2Vec2Model / Wav2Vec2ForCTC state dict (heads and quantizers are ignored).

        ``assign`` takes the tensors as they are (for a network built on the meta device)."""
        rename = [
            ("feature_extractor.conv_layers.", "conv_layers."),
            ("feature_projection.layer_norm.", "projection_norm."),
            ("feature_projection.projection.", "projection."),
            ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv.weight_g"),
            ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv.weight_v"),
            ("encoder.pos_conv_embed.conv.weight_g", "pos_conv.weight_g"),
            ("encoder.pos_conv_embed.conv.weight_v", "pos_conv.weight_v"),
            ("encoder.pos_conv_embed.conv.bias", "pos_conv.bias"),
            ("encoder.layer_norm.", "encoder_norm."),
            ("encoder.layers.", "layers."),
        ]
        mine = {}
        for key, value in state.items():
            key = key.removeprefix("wav2vec2.")
            for old, new in rename:
                if key.startswith(old):
                    mine[new + key[len(old) :]] = value
                    break
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(mine)), sorted(set(mine) - expected)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
        if unexpected:  # weights of layers this network does not have: not Wav2Vec2 after all
            raise ValueError(
                f"checkpoint has {len(unexpected)} weights this Wav2Vec2 lacks, e.g. {unexpected[0]}"
            )
        self.load_state_dict(mine, strict=True, assign=assign)
        self.pos_conv.fold()


def resolve_files(name: str, local_only: bool) -> tuple[Path, Path, Path]:
    """(config.json, preprocessor_config.json, weights) of a local folder or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        weights = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path} has no {' or '.join(WEIGHT_FILES)}")
        return path / "config.json", path / "preprocessor_config.json", weights
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    get = lambda f: Path(hf_hub_download(name, f, local_files_only=local_only))  # noqa: E731
    config, prep = get("config.json"), get("preprocessor_config.json")
    for w in WEIGHT_FILES:
        try:
            return config, prep, get(w)
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"{name} has no {' or '.join(WEIGHT_FILES)}")


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
