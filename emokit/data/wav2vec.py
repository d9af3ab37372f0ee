"""Wav2Vec2 audio tokens aligned one per video frame (EMO's audio condition).

The model runs on overlapping chunks so memory stays flat however long the audio is (Hallo runs
wav2vec over whole files and runs out of memory on minutes of audio). Every output frame is
computed from exactly one chunk, the one whose core span contains the frame's centre time, by
linear interpolation between the two wav2vec tokens (~50 Hz) around that time; the chunk's
overlap gives those tokens context on both sides, and the rest of the overlap is dropped.

Chunking is exact for layers with a local receptive field (the CNN features and the positional
convolution, hidden state 0); transformer layers attend over their whole chunk, and a model with
GroupNorm in its first conv layer (wav2vec2-base) normalises per chunk, so those differ slightly
from a single pass over the whole file. Chunks are 30 s by default: beyond that context, attention
is mostly local.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from emokit.data.audio_model import HOW_TO_PROVIDE, PRECISIONS, AudioModelError, offline, why_not
from emokit.data.wav2vec_net import Wav2Vec2Config, Wav2Vec2Net, load_weights, resolve_files

SAMPLE_RATE = 16000
RANDOM_MARKER = "emokit_random_init"  # config.json key set by the savers below

log = logging.getLogger(__name__)

__all__ = ["AudioEncoder", "AudioModelError", "base_size_wav2vec", "resolve_precision", "save_tiny_wav2vec"]


def _load(model: str | Path) -> tuple[Wav2Vec2Net, bool]:
    """The network and whether its feature extractor normalises the waveform."""
    name = str(model)
    try:
        config_file, prep_file, weights = resolve_files(name, local_only=offline())
        prep = json.loads(prep_file.read_text())
        with torch.device("meta"):  # no random init of 95M weights that are replaced anyway
            net = Wav2Vec2Net(Wav2Vec2Config.from_json(config_file))
        net.load_hf_state_dict(load_weights(weights), assign=True)
    except Exception as e:  # any failure to load = unusable --audio-model; keep the cause
        raise AudioModelError(
            f"cannot load wav2vec model --audio-model {name!r}: {why_not(name, e)}; {HOW_TO_PROVIDE}"
        ) from e
    rate = prep.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise AudioModelError(
            f"--audio-model {name!r} expects {rate} Hz audio; emokit feeds {SAMPLE_RATE} Hz"
        )
    return net.eval(), bool(prep.get("do_normalize", True))


def _cpu_computes_bf16() -> bool:
    """AMX or AVX512-BF16: bfloat16 matmuls run natively (emulated bf16 would be slower)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision``. "auto" = bfloat16 where the hardware runs it natively
    (CUDA with bf16; CPUs with AMX/AVX512-BF16, where wav2vec2-base runs ~2× faster than in
    float32 and its tokens keep a cosine ≥ 0.9998 to float32's), float16 on older CUDA GPUs,
    float32 on other CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"audio precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and _cpu_computes_bf16() else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _parse_layers(layers: str | int | Sequence[int], num_layers: int) -> list[int]:
    """Indices into hidden_states: 0 = CNN+positional features, 1..L = transformer layers."""
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text == "all":
            return list(range(1, num_layers + 1))
        try:
            idx = [int(x) for x in text.split(",") if x.strip()]
        except ValueError as e:
            raise ValueError(f'layers must be "all" or comma-separated integers, got {layers!r}') from e
    elif isinstance(layers, int):
        idx = [layers]
    else:
        idx = [int(x) for x in layers]
    if not idx:
        raise ValueError("layers selects no layer")
    out = []
    for i in idx:
        if not -(num_layers + 1) <= i <= num_layers:
            raise ValueError(f"layer {i} out of range for a model with {num_layers} layers")
        out.append(i % (num_layers + 1))
    return out


class AudioEncoder:
    """Wav2Vec2 hidden states resampled to one token per video frame, float16 [F, L, D]."""

    def __init__(
        self,
        model: str | Path,
        layers: str | int | Sequence[int] = "all",
        device: str | torch.device = "cpu",
        chunk_s: float = 30.0,
        overlap_s: float = 1.0,
        batch_size: int = 4,
        precision: str = "fp32",
    ) -> None:
        if chunk_s <= 0 or overlap_s < 0 or batch_size < 1:
            raise ValueError("chunk_s must be > 0, overlap_s >= 0 and batch_size >= 1")
        net, self.normalize = _load(model)
        self.device = torch.device(device)
        # The weights themselves are cast (autocast would re-cast them on every call); measured on
        # wav2vec2-base in bf16: relative error 1.4 % and token cosine ≥ 0.9998 to float32.
        self.dtype = resolve_precision(precision, self.device)
        self.net = net.to(self.device, dtype=self.dtype).eval()
        cfg = net.config
        self.random_init = cfg.emokit_random_init
        if self.random_init:
            log.warning("wav2vec model %s has RANDOM weights (made for tests/benchmarks)", model)
        self.layers = _parse_layers(layers, cfg.num_hidden_layers)
        self.dim = cfg.hidden_size
        self.stride = math.prod(cfg.conv_stride)  # samples per token (320)
        field, step = 1, 1
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
            field, step = field + (k - 1) * step, step * s
        self.field = field  # receptive field in samples (400)
        # Chunk core and overlap in whole tokens so chunk tokens sit on the global token grid;
        # at least 3 tokens of overlap so interpolation never needs a token outside its chunk.
        self.core = max(1, round(chunk_s * SAMPLE_RATE / self.stride)) * self.stride
        self.overlap = max(3, math.ceil(overlap_s * SAMPLE_RATE / self.stride)) * self.stride
        self.batch_size = batch_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _tokens(self, n_samples: int) -> int:
        return self.net.output_tokens(n_samples)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> torch.Tensor:
        """[B, T] normalised audio -> selected hidden states [B, L, tokens, D] (float32)."""
        x = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
        hs = self.net(x)[self.layers]
        return rearrange(hs, "l b t d -> b l t d").float()

    def __call__(self, wav16k: np.ndarray, num_frames: int, fps: float = 30) -> np.ndarray:
        """Tokens for frames k = 0..num_frames-1 at centre times (k + 0.5) / fps of the audio.

        Audio shorter than num_frames / fps is padded with silence; audio past it is context only.
        """
        wav = np.asarray(wav16k, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio [samples], got shape {wav.shape}")
        if num_frames < 0 or fps <= 0:
            raise ValueError(f"num_frames must be >= 0 and fps > 0, got {num_frames}, {fps}")
        out = np.zeros((num_frames, self.num_layers, self.dim), dtype=np.float16)
        if num_frames == 0:
            return out
        if self.normalize and wav.size:  # the feature extractor's statistics, over the whole clip
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        need = max(round(num_frames / fps * SAMPLE_RATE), self.field)
        if wav.size < need:
            wav = np.concatenate([wav, np.zeros(need - wav.size, np.float32)])
        n = wav.size
        total_tokens = self._tokens(n)
        centres = (np.arange(num_frames) + 0.5) / fps * SAMPLE_RATE  # in samples
        pos = np.clip((centres - self.field / 2) / self.stride, 0, total_tokens - 1)
        owner = np.minimum(centres // self.core, (need - 1) // self.core).astype(np.int64)
        spans = []
        for c in np.unique(owner).tolist():
            lo = max(0, c * self.core - self.overlap)
            hi = min(n, (c + 1) * self.core + self.overlap)
            spans.append((c, lo, hi))
        # Batch consecutive chunks of equal length (no padding: it would change GroupNorm stats).
        i = 0
        while i < len(spans):
            size = spans[i][2] - spans[i][1]
            j = i + 1
            while j < len(spans) and j - i < self.batch_size and spans[j][2] - spans[j][1] == size:
                j += 1
            group = spans[i:j]
            hs = self._forward(np.stack([wav[lo:hi] for _, lo, hi in group]))
            for (c, lo, _hi), h in zip(group, hs):
                frames = np.nonzero(owner == c)[0]
                out[frames] = _interpolate(h, pos[frames], lo // self.stride, total_tokens)
            i = j
        return out


def _interpolate(h: torch.Tensor, pos: np.ndarray, first: int, total: int) -> np.ndarray:
    """Chunk states h [L, T, D] (global tokens first..first+T-1) at global positions -> [F, L, D]."""
    j0 = np.floor(pos).astype(np.int64)
    j1 = np.minimum(j0 + 1, total - 1)
    if j0.min() < first or j1.max() >= first + h.shape[1]:
        raise AssertionError("a frame's tokens lie outside its chunk")  # chunk geometry bug
    w = torch.from_numpy(pos - j0).to(h.device, h.dtype)[None, :, None]
    mixed = h[:, j0 - first] * (1 - w) + h[:, j1 - first] * w
    return rearrange(mixed, "l f d -> f l d").to(torch.float16).cpu().numpy()


def _save(config_kwargs: dict[str, Any], directory: str | Path, note: str) -> Path:
    from transformers import Wav2Vec2Config as HFConfig
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    marks: dict[str, Any] = {RANDOM_MARKER: True, "emokit_note": note}
    config = HFConfig(**config_kwargs, **marks)
    torch.manual_seed(0)
    Wav2Vec2Model(config).eval().save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    ).save_pretrained(out)
    return out


def save_tiny_wav2vec(directory: str | Path) -> Path:
    """Save a tiny RANDOM-weight Wav2Vec2Model + feature extractor (tests, demo; not trained).

    Same conv strides as wav2vec2-base (320 samples per token), layer-norm conv features so the
    non-transformer features are local (chunking is exact for them).
    """
    return _save(
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer",
            conv_bias=True,
        ),
        directory,
        "random weights, tiny test model: its tokens carry no speech information",
    )


def base_size_wav2vec(directory: str | Path) -> Path:
    """Save a RANDOM-weight model with wav2vec2-base-960h's architecture (benchmarks: same cost)."""
    return _save(
        dict(feat_extract_norm="group", conv_bias=False, do_stable_layer_norm=False),
        directory,
        "random weights with wav2vec2-base size: for timing only, tokens are meaningless",
    )
