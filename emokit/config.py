"""The EMO recipe as typed config. Defaults live here and nowhere else.

A recipe file (TOML, see ``pipelines/emo.toml``) overrides any subset of fields, section by
section; unknown keys are an error so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True)
class IngestConfig:
    detector: str = "adaptive"  # "adaptive" | "content"
    # AdaptiveDetector: a frame is a cut when its content change is this many times its neighbours'.
    adaptive_threshold: float = 3.0
    min_content_val: float = 15.0
    content_threshold: float = 27.0  # ContentDetector threshold
    min_scene_len_s: float = 0.5
    downscale_width: int = 256  # detect scenes on frames this wide (speed; cuts stay frame-accurate)
    min_clip_s: float = 3.0
    max_clip_s: float = 12.0


@dataclass(frozen=True)
class LabelConfig:
    fps: int = 30
    crop_scale: float = 1.5
    size: int = 512
    detect_width: int = 320  # face detection runs on frames downscaled to this width
    min_face_confidence: float = 0.5
    max_gap_s: float = 0.5  # longer runs of missed faces reject the clip
    min_face_frac: float = 0.05  # face box side / frame short side below this → "face too small"
    jump_score: float = 0.68  # jump-cut score above which a frame starts a new clip (see jumpcuts)
    audio_model: str = "facebook/wav2vec2-base-960h"
    audio_layers: str = "all"  # "all" or comma-separated layer indices, e.g. "-1" or "6,12"
    audio_chunk_s: float = 30.0
    audio_overlap_s: float = 1.0
    audio_precision: str = "auto"  # auto: bf16 where native, fp16 on older GPUs, else fp32; or fp32/bf16/fp16
    shard_size: int = 64
    crf: int = 18
    x264_preset: str = "superfast"  # crop mp4 speed/size: 2.7 vs 4.3 ms a 512² frame, +50 % bytes vs veryfast
    syncnet: str | None = None  # SyncNet weights (file, folder or hub id): A/V sync by SyncNet


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    lr: float = 1e-5
    batch_size: int = 1
    frames: int = 12
    motion_frames: int = 4
    max_steps: int = 1000
    checkpoint_every: int = 500
    cond_dropout: float = 0.05  # share of samples with only the reference dropped; as many audio only
    cond_drop_both: float = 0.05  # reference and audio dropped together: CFG's unconditional branch
    motion_dropout: float = 0.1  # stages 2-3: zero motion maps, what a video's first clip gets
    ema_decay: float = 0.9999
    seed: int = 0
    drop_flags: tuple[str, ...] = ("multi_face", "captions", "static")
    weight_decay: float = 0.01  # AdamW
    grad_clip: float = 1.0  # max grad norm; 0 disables
    gradient_checkpointing: bool = True  # on CUDA only (CPU runs are tiny)
    # autocast: "auto" (bf16 on a CUDA device with native bf16, else fp32), "bf16", "fp16" (CUDA
    # only) or "no"; see emokit/train/precision.py
    mixed_precision: str = "auto"
    log_every: int = 10  # steps per log.csv row (loss averaged over them and over ranks)
    grad_accum: int = 1  # micro-batches per optimizer step: a batch of grad_accum × batch_size per GPU
    warmup_steps: int = 0  # linear LR warm-up over this many optimizer steps (0: none)
    log_with: str = ""  # trackers besides log.csv: "tensorboard", "wandb" or both comma-separated
    sample_every: int = 0  # optimizer steps between sample videos of the validation clip (0: none)
    sample_steps: int = 10  # DDIM steps of a sample (no guidance)
    sample_frames: int = 8  # frames of a sample
    # Learning levers (emokit, not EMO; 1.0 / 0.0 = EMO's plain recipe), see emokit/train/weighting.py
    face_loss_weight: float = 1.0  # loss weight of latent cells inside the face box (1 elsewhere)
    mouth_loss_weight: float = 1.0  # loss weight inside the mouth region of the face box
    audio_lr_scale: float = 1.0  # lr multiplier of audio projection + audio-attention (stage 2)
    motion_noise: float = 0.0  # std of Gaussian noise on motion-frame latents in training
    # stage 2: "zero_tokens" (the audio projection's last layer at zero) or "zero_output" (tokens
    # non-zero, audio-attention to_out weights at zero); emokit/models/stages.py open_audio_path
    audio_start: str = "zero_tokens"
    # What the model predicts (emokit/train/noise.py): EMO/SD1.5 use "epsilon"; a model trained from
    # scratch learns faster with "v_prediction" and a zero terminal SNR. Stage 1 fixes it for a run.
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    cache_latents: bool = False  # VAE moments of every clip stored once (DATASET/latents), see latent_cache


@dataclass(frozen=True)
class GenerateConfig:
    steps: int = 40
    cfg: float = 3.5
    guidance: str = "both"  # what the unconditional branch drops: "both" (reference + audio, EMO) or "audio"
    frames: int = 12
    motion_frames: int = 4
    size: int = 0  # output side in pixels; 0 = the checkpoint's training resolution (sd15: 512)
    speed: float = 0.5  # head rotation velocity fed to the speed layers, degrees per frame
    seed: int = 0
    scheduler: str = "ddim"  # sampler: ddim (EMO), ddpm (ancestral), dpmpp (DPM-Solver++), unipc, euler
    timestep_spacing: str = "trailing"  # DDIM steps start at t = T-1 ("leading": diffusers default)
    dtype: str = "auto"  # "auto" = bfloat16 on CUDA, float32 on CPU; or float32/float16/bfloat16
    crf: int = 18


@dataclass(frozen=True)
class Recipe:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)


T = TypeVar("T")


def _override(obj: T, values: dict[str, Any], where: str) -> T:
    known = {f.name: f for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for k, v in fixed.items():
        default = getattr(obj, k)
        ok = isinstance(v, type(default)) or (isinstance(default, float) and isinstance(v, int))
        if not ok or (isinstance(v, bool) and not isinstance(default, bool)):
            raise ValueError(f"{where}: {k} = {v!r} should be a {type(default).__name__}")
        if isinstance(default, float):
            fixed[k] = float(v)
    return dataclasses.replace(obj, **fixed)  # type: ignore[type-var]


def load_recipe(path: str | Path | None = None) -> Recipe:
    """The default recipe, overridden by the TOML file at ``path`` when given."""
    recipe = Recipe()
    if path is None:
        return recipe
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    sections = {f.name for f in dataclasses.fields(recipe)}
    unknown = set(data) - sections
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(sections)}")
    for name, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"{path}: [{name}] must be a table of settings, got {values!r}")
    parts = {name: _override(getattr(recipe, name), data[name], f"{path} [{name}]") for name in data}
    return dataclasses.replace(recipe, **parts)


def as_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict view of a config section, for manifests and checkpoints."""
    return dataclasses.asdict(obj)
