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
from emokit.data.logmel import LogMelEncoder, is_logmel
from emokit.data.wav2vec_net import Wav2Vec2Config, Wav2Vec2Net, load_weights, resolve_files

SAMPLE_RATE = 16000
RANDOM_MARKER = "emokit_random_init"  # config.json key set by the savers below

log = logging.getLogger(__name__)

__all__ = [
    "AudioEncoder",
    "AudioModelError",
    "TokenStream",
    "base_size_wav2vec",
    "resolve_precision",
    "save_tiny_wav2vec",
]


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
        plan = _ChunkPlan(self, wav16k, num_frames, fps)
        out = np.zeros((num_frames, self.num_layers, self.dim), dtype=np.float16)
        # Batch consecutive chunks of equal length (no padding: it would change GroupNorm stats).
        spans, i = plan.spans, 0
        while i < len(spans):
            size = spans[i][2] - spans[i][1]
            j = i + 1
            while j < len(spans) and j - i < self.batch_size and spans[j][2] - spans[j][1] == size:
                j += 1
            group = spans[i:j]
            hs = self._forward(np.stack([plan.audio(lo, hi) for _, lo, hi in group]))
            for (c, lo, _hi), h in zip(group, hs):
                frames = plan.frames_of(c)
                out[frames] = _interpolate(h, plan.pos[frames], lo // self.stride, plan.total_tokens)
            i = j
        return out

    def stream(self, wav16k: np.ndarray, num_frames: int, fps: float = 30) -> TokenStream:
        """The tokens ``__call__`` gives, computed chunk by chunk as rows are asked for, so memory
        stays flat in audio length (generation asks clip by clip)."""
        return TokenStream(self, _ChunkPlan(self, wav16k, num_frames, fps))


class _ChunkPlan:
    """Normalised, padded audio and which chunk computes which frame (shared by both paths)."""

    def __init__(self, enc: AudioEncoder, wav16k: np.ndarray, num_frames: int, fps: float) -> None:
        wav = np.asarray(wav16k, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio [samples], got shape {wav.shape}")
        if num_frames < 0 or fps <= 0:
            raise ValueError(f"num_frames must be >= 0 and fps > 0, got {num_frames}, {fps}")
        self.num_frames = num_frames
        if num_frames == 0:
            self.wav, self.total_tokens = wav, 0
            self.spans: list[tuple[int, int, int]] = []
            self.pos = self.owner = np.zeros(0)
            return
        # The feature extractor's statistics, over the whole clip; applied per chunk (``audio``)
        # so no normalised copy of a long track is held.
        self.mean, self.scale = 0.0, 1.0
        if enc.normalize and wav.size:
            self.mean, self.scale = wav.mean(), np.sqrt(wav.var() + 1e-7)
        need = max(round(num_frames / fps * SAMPLE_RATE), enc.field)
        if wav.size < need:
            wav = np.concatenate([wav, np.zeros(need - wav.size, np.float32)])
        n = wav.size
        self.wav = wav
        self.total_tokens = enc._tokens(n)
        centres = (np.arange(num_frames) + 0.5) / fps * SAMPLE_RATE  # in samples
        self.pos = np.clip((centres - enc.field / 2) / enc.stride, 0, self.total_tokens - 1)
        self.owner = np.minimum(centres // enc.core, (need - 1) // enc.core).astype(np.int64)
        self.spans = []  # (chunk, first sample, end sample) with the overlap on both sides
        for c in np.unique(self.owner).tolist():
            lo = max(0, c * enc.core - enc.overlap)
            hi = min(n, (c + 1) * enc.core + enc.overlap)
            self.spans.append((c, lo, hi))

    def audio(self, lo: int, hi: int) -> np.ndarray:
        """Normalised samples [lo, hi)."""
        return (self.wav[lo:hi] - self.mean) / self.scale

    def frames_of(self, chunk: int) -> np.ndarray:
        return np.nonzero(self.owner == chunk)[0]


class TokenStream:
    """Per-frame tokens [num_frames, L, D] float16 on demand: ``stream[rows]`` for any row list.

    Each chunk is computed the first time one of its frames is asked for; only the chunks of the
    latest request are kept (consecutive clips reuse them), so memory is one or two chunks
    (30 s: 18 MB with wav2vec2-base's 13 × 768) however long the audio. Tokens equal
    ``AudioEncoder.__call__``'s up to float rounding (chunks are not batched here).
    """

    def __init__(self, encoder: AudioEncoder, plan: _ChunkPlan) -> None:
        self.encoder, self.plan = encoder, plan
        self._chunks: dict[int, np.ndarray] = {}  # chunk → tokens of the frames it owns
        self._spans = {c: (lo, hi) for c, lo, hi in plan.spans}

    def __len__(self) -> int:
        return self.plan.num_frames

    def _chunk(self, c: int) -> np.ndarray:
        if c not in self._chunks:
            enc, plan = self.encoder, self.plan
            lo, hi = self._spans[c]
            h = enc._forward(plan.audio(lo, hi)[None])[0]
            frames = plan.frames_of(c)
            self._chunks[c] = _interpolate(h, plan.pos[frames], lo // enc.stride, plan.total_tokens)
        return self._chunks[c]

    def __getitem__(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        owners = self.plan.owner[rows]
        wanted = np.unique(owners).tolist()
        out = np.empty((rows.size, self.encoder.num_layers, self.encoder.dim), np.float16)
        for c in wanted:
            first_frame = int(self.plan.frames_of(c)[0])
            sel = owners == c
            out[sel] = self._chunk(c)[rows[sel] - first_frame]
        for c in list(self._chunks):  # keep only what this request used
            if c not in wanted:
                del self._chunks[c]
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


def open_audio_encoder(
    model: str | Path,
    layers: str | int | Sequence[int] = "all",
    device: str | torch.device = "cpu",
    chunk_s: float = 30.0,
    overlap_s: float = 1.0,
    precision: str = "fp32",
) -> AudioEncoder | LogMelEncoder:
    """The encoder an --audio-model value names: ``logmel`` (no weights) or a wav2vec model.

    Label and generate both open it here, so a run is driven by the same features it learned from.
    """
    if is_logmel(model):
        if str(layers) != "all":
            raise ValueError(
                f"--audio-layers {layers!r} applies to wav2vec models; logmel has 2 fixed layers"
            )
        return LogMelEncoder()
    return AudioEncoder(
        model, layers=layers, device=device, chunk_s=chunk_s, overlap_s=overlap_s, precision=precision
    )
