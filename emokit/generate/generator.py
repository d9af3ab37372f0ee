"""Generator: one portrait + a speech track → an mp4 as long as the audio (EMO inference).

Clip after clip of ``frames`` frames: each clip starts from fresh noise, sees the last
``motion_frames`` latents the previous clip produced (the first clip: zero motion maps, exactly
what training feeds a sample whose motion frames are dropped) and its own slice of the per-frame
wav2vec tokens with ±2 real neighbouring frames across clip edges, and is denoised by a
diffusers scheduler (DDIM, as in EMO, unless told otherwise) + classifier-free guidance.
ReferenceNet runs on the portrait once per video and on the motion frames once per clip — never
per step. Each clip is decoded and streamed to the mp4 writer as soon as it is done, so memory
stays flat however long the audio is (peers keep every latent or frame and run out of memory on
minutes of audio).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from einops import rearrange
from tqdm.auto import tqdm

from emokit.config import GenerateConfig, LabelConfig
from emokit.data.encode import Mp4Writer
from emokit.data.logmel import LogMelEncoder, LogMelStream
from emokit.data.wav2vec import AudioEncoder, TokenStream, open_audio_encoder
from emokit.generate.portrait import Portrait, load_portrait
from emokit.generate.sampler import Denoiser, cfg_denoiser, ddim_timesteps
from emokit.generate.schedulers import (
    SchedulerMixin,
    check_scheduler_name,
    make_scheduler,
    schedule_config,
    scheduler_sample,
)
from emokit.generate.speech import FPS, MUX_SR, GenerateError, Speech
from emokit.models import EMOModel, ReferenceFeatures
from emokit.models.window import context_rows
from emokit.train.checkpoint import final_checkpoint, latest_finished_stage, load_for_inference
from emokit.train.noise import PREDICTION_TYPES, load_scheduler

log = logging.getLogger(__name__)

DECODE_PIXELS_CPU = 4 * 512 * 512  # pixels per VAE decode call: 4 frames at 512²
DECODE_PIXELS_CUDA = 12 * 512 * 512  # a whole EMO clip at 512² in one call
GUIDANCE = ("both", "audio")  # what the unconditional branch of classifier-free guidance drops
_GEN = GenerateConfig()
_LABEL = LabelConfig()


@dataclass(frozen=True)
class GenerationResult:
    """What one generation wrote and how it was made."""

    out_path: Path
    frames: int
    fps: int
    audio_seconds: float
    clips: int
    size: int
    steps: int
    cfg: float
    seed: int
    speed: float | None
    seconds: float  # wall time of the whole call
    warnings: tuple[str, ...]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" → bfloat16 on CUDA (fast, no fp16 VAE overflow), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in table:
        raise GenerateError(f"dtype must be auto, float32, float16 or bfloat16, got {name!r}")
    return table[name]


def load_run(run_dir: str | Path) -> tuple[EMOModel, DDPMScheduler]:
    """The run's inference model (latest finished stage, EMA) and its training noise schedule."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GenerateError(f"checkpoint not found: {run_dir}")
    model = load_for_inference(run_dir)
    stage = latest_finished_stage(run_dir)
    scheduler = load_scheduler(final_checkpoint(run_dir, stage))  # type: ignore[arg-type]
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise GenerateError(
            f"{run_dir}: trained with prediction_type={scheduler.config.prediction_type!r}; the "
            f"sampler here supports {PREDICTION_TYPES}"
        )
    return model, scheduler


class Generator:
    """Loads a trained run and a wav2vec model once; each call renders one video."""

    def __init__(
        self,
        checkpoint_dir: str | Path,
        device: str | torch.device = "cpu",
        audio_model: str | Path = _LABEL.audio_model,
        *,
        audio_layers: str = _LABEL.audio_layers,
        dtype: str = _GEN.dtype,
        frames: int = _GEN.frames,
        motion_frames: int = _GEN.motion_frames,
        timestep_spacing: str = _GEN.timestep_spacing,
        crf: int = _GEN.crf,
        progress: bool = True,
        scheduler: str | SchedulerMixin = _GEN.scheduler,
    ) -> None:
        dev = torch.device(device)
        _check_scheduler(scheduler)  # before the model loads
        model, train_scheduler = load_run(checkpoint_dir)
        encoder = open_audio_encoder(
            audio_model,
            layers=audio_layers,
            device=dev,
            chunk_s=_LABEL.audio_chunk_s,
            overlap_s=_LABEL.audio_overlap_s,
            precision=_LABEL.audio_precision,
        )
        self._setup(
            model,
            train_scheduler.alphas_cumprod.clone(),
            encoder,
            dev,
            resolve_dtype(dtype, dev),
            frames,
            motion_frames,
            timestep_spacing,
            crf,
            progress,
        )
        self.prediction_type = str(train_scheduler.config.prediction_type)
        self.scheduler = _sampling_scheduler(
            scheduler, train_scheduler.config, self.prediction_type, self.spacing
        )
        self.trained_stage = latest_finished_stage(checkpoint_dir) or 1

    @classmethod
    def from_parts(
        cls,
        model: EMOModel,
        alphas_cumprod: torch.Tensor,
        audio_encoder: AudioEncoder | LogMelEncoder,
        device: str | torch.device = "cpu",
        *,
        dtype: str = _GEN.dtype,
        frames: int = _GEN.frames,
        motion_frames: int = _GEN.motion_frames,
        timestep_spacing: str = _GEN.timestep_spacing,
        crf: int = _GEN.crf,
        progress: bool = True,
        trained_stage: int = 3,
        prediction_type: str = "epsilon",
        scheduler: str | SchedulerMixin = _GEN.scheduler,
    ) -> Generator:
        """A generator around an in-memory model (benchmarks with random weights, notebooks);
        ``trained_stage``: the last EMO stage its weights went through (3: speed layers trained);
        ``prediction_type``: what the model was trained to predict (emokit.train.noise.PREDICTION_TYPES);
        ``scheduler``: a name (emokit.generate.schedulers.SCHEDULERS) or a ready diffusers scheduler."""
        if prediction_type not in PREDICTION_TYPES:
            raise GenerateError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        _check_scheduler(scheduler)
        dev = torch.device(device)
        self = cls.__new__(cls)
        self._setup(
            model,
            alphas_cumprod,
            audio_encoder,
            dev,
            resolve_dtype(dtype, dev),
            frames,
            motion_frames,
            timestep_spacing,
            crf,
            progress,
        )
        self.trained_stage = trained_stage
        self.prediction_type = prediction_type
        train_config = schedule_config(self.alphas_cumprod, prediction_type)
        self.scheduler = _sampling_scheduler(scheduler, train_config, prediction_type, self.spacing)
        return self

    def _setup(
        self,
        model: EMOModel,
        alphas_cumprod: torch.Tensor,
        encoder: AudioEncoder | LogMelEncoder,
        device: torch.device,
        dtype: torch.dtype,
        frames: int,
        motion_frames: int,
        spacing: str,
        crf: int,
        progress: bool,
    ) -> None:
        cfg = model.config
        if frames < 1 or motion_frames < 0:
            raise GenerateError(f"frames must be >= 1 and motion_frames >= 0, got {frames}, {motion_frames}")
        if frames + motion_frames > cfg.temporal_max_frames:
            raise GenerateError(
                f"{frames} frames + {motion_frames} motion frames exceed the model's "
                f"temporal_max_frames={cfg.temporal_max_frames}"
            )
        if (encoder.num_layers, encoder.dim) != (cfg.audio_layers, cfg.audio_dim):
            raise GenerateError(
                f"the audio model gives {encoder.num_layers} layers x {encoder.dim} features per "
                f"frame but the checkpoint expects {cfg.audio_layers} x {cfg.audio_dim}; pass the "
                "--audio-model (and layers) the training data was labelled with"
            )
        ddim_timesteps(len(alphas_cumprod), 1, spacing)  # a bad spacing fails here, not mid-run
        self.model = model.to(device=device, dtype=dtype).eval()
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.encoder = encoder
        self.device, self.dtype = device, dtype
        self.frames, self.motion_frames = frames, motion_frames
        self.spacing, self.crf, self.progress = spacing, crf, progress
        # Latent sides must survive every UNet downsampling: 8 (VAE) × 2 per extra UNet level.
        self.size_multiple = cfg.vae_factor * 2 ** (len(cfg.block_out_channels) - 1)
        self.native_size = cfg.sample_size * cfg.vae_factor  # the resolution it was trained at

    # ---- one video --------------------------------------------------------------------------
    def __call__(
        self,
        portrait: str | Path | Portrait,
        audio: str | Path | Speech,
        out_path: str | Path,
        steps: int = _GEN.steps,
        cfg: float = _GEN.cfg,
        seed: int = _GEN.seed,
        speed: float | None = _GEN.speed,
        size: int = _GEN.size,  # 0: native_size
        guidance: str = _GEN.guidance,
    ) -> GenerationResult:
        """Render ``out_path`` (H.264 + AAC, 30 FPS, ceil(audio × 30) frames, the audio muxed).

        Inputs are read and checked before anything is computed; the mp4 appears only complete
        (Mp4Writer writes a temp file and renames it), so a failure leaves nothing behind.
        """
        start = time.perf_counter()
        self._check_settings(steps, cfg)
        if not isinstance(portrait, Portrait):
            size = size or self.native_size
            self._check_size(size)
            portrait = load_portrait(
                portrait,
                size=size,
                crop_scale=_LABEL.crop_scale,
                detect_width=_LABEL.detect_width,
                min_confidence=_LABEL.min_face_confidence,
            )
        speech = audio if isinstance(audio, Speech) else Speech.load(audio)
        frames = self.render(
            portrait, speech, steps=steps, cfg=cfg, seed=seed, speed=speed, guidance=guidance
        )
        with Mp4Writer(
            out_path,
            fps=FPS,
            size=(portrait.size, portrait.size),
            crf=self.crf,
            audio=speech.mux,
            audio_sr=MUX_SR,
        ) as writer:
            for frame in frames:
                writer.write(frame)
            written = writer.frames
        return GenerationResult(
            out_path=Path(out_path),
            frames=written,
            fps=FPS,
            audio_seconds=speech.seconds,
            clips=math.ceil(speech.frames / self.frames),
            size=portrait.size,
            steps=steps,
            cfg=cfg,
            seed=seed,
            speed=speed if self.speed_trained else None,
            seconds=time.perf_counter() - start,
            warnings=portrait.warnings,
        )

    @torch.inference_mode()
    def render(
        self,
        portrait: Portrait,
        speech: Speech,
        steps: int = _GEN.steps,
        cfg: float = _GEN.cfg,
        seed: int = _GEN.seed,
        speed: float | None = _GEN.speed,
        guidance: str = _GEN.guidance,
    ) -> Iterator[np.ndarray]:
        """The video's frames (RGB uint8 [size, size, 3]) one by one, exactly ``speech.frames``.

        ``guidance``: what CFG's unconditional branch drops — "both" (reference and audio, as EMO)
        or "audio" (the portrait kept: guidance then amplifies only what the audio changes).

        A generator: each clip is sampled when the consumer asks for its first frame, and only
        the current clip's latents and the motion frames are held.
        """
        self._check_settings(steps, cfg)
        if guidance not in GUIDANCE:
            raise GenerateError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
        size = portrait.size
        self._check_size(size)
        speed = speed if self.speed_trained else None  # untrained speed layers: no input at all
        clips = math.ceil(speech.frames / self.frames)
        log.info(
            "%d frames (%.2f s of audio) in %d clips of %d, %d steps, cfg %g",
            speech.frames,
            speech.seconds,
            clips,
            self.frames,
            steps,
            cfg,
        )
        tokens = self.encoder.stream(speech.wav16k, speech.frames, fps=FPS)  # [F, L, D], clip by clip
        ref_latents = self.model.encode(_to_pixels(portrait.image, self.device, self.dtype))
        portrait_ref = self.model.reference(ref_latents)  # ReferenceNet on the portrait: once
        mask = torch.from_numpy(portrait.face_mask)[None].to(self.device, self.dtype)
        h = w = size // self.model.config.vae_factor
        c = self.model.config.latent_channels
        motion = torch.zeros(1, self.motion_frames, c, h, w, device=self.device)
        noise_gen = torch.Generator("cpu").manual_seed(seed)
        speed_clip = None if speed is None else torch.full((1, self.frames), float(speed), device=self.device)

        with tqdm(total=clips, desc="clips", unit="clip", disable=not self.progress) as clip_bar:
            for k in range(clips):
                first, keep = k * self.frames, min(self.frames, speech.frames - k * self.frames)
                audio_clip = _clip_tokens(
                    tokens, first, self.frames, self.model.config.audio_window, self.device
                )
                ref = self._clip_reference(portrait_ref, motion, k == 0)  # once per clip
                model_fn = self._model_fn(ref, audio_clip, mask, speed_clip, cfg, guidance == "both")
                denoise = cfg_denoiser(model_fn, cfg)
                x_T = torch.randn(1, self.frames, c, h, w, generator=noise_gen).to(self.device)
                with tqdm(
                    total=steps,
                    desc=f"clip {k + 1}/{clips}",
                    unit="step",
                    leave=False,
                    disable=not self.progress,
                ) as step_bar:
                    denoise = _ticking(denoise, step_bar)
                    latents = scheduler_sample(denoise, self.scheduler, x_T, steps, noise_gen)
                if self.motion_frames:
                    motion = torch.cat([motion, latents], dim=1)[:, -self.motion_frames :]
                yield from self._decode(latents[0, :keep])
                clip_bar.update()

    @property
    def speed_trained(self) -> bool:
        """Whether the run went through stage 3, the only one that trains the speed layers."""
        return self.trained_stage >= 3

    def _check_settings(self, steps: int, cfg: float) -> None:
        if cfg < 1.0:
            raise GenerateError(f"cfg must be >= 1 (1 = no guidance), got {cfg}")
        ddim_timesteps(len(self.alphas_cumprod), steps, self.spacing)  # raises on bad steps

    def _check_size(self, size: int) -> None:
        if size < self.size_multiple or size % self.size_multiple:
            raise GenerateError(
                f"size must be a positive multiple of {self.size_multiple} for this model, got {size}"
            )

    def _clip_reference(
        self, portrait_ref: ReferenceFeatures, motion: torch.Tensor, first: bool = False
    ) -> ReferenceFeatures:
        """The clip's ReferenceNet features: the portrait's, plus the motion frames' site features
        (zero maps for the ``first`` clip: ``drop_motion_features``, as in training)."""
        if not self.motion_frames:
            return portrait_ref
        drop = torch.full((motion.shape[0],), first, dtype=torch.bool, device=motion.device)
        sites = self.model.motion_features(motion, drop)
        return ReferenceFeatures(portrait_ref.tokens, portrait_ref.latent_hw, sites, self.motion_frames)

    def _model_fn(
        self,
        ref: ReferenceFeatures,
        audio: torch.Tensor,
        mask: torch.Tensor,
        speed: torch.Tensor | None,
        cfg: float,
        drop_reference: bool = True,
    ):
        """The EMO denoiser over a batch of 1 (conditional) or 2 (CFG: + unconditional) clips;
        the unconditional rows drop the audio, and the reference too when ``drop_reference``."""
        doubled = ref.repeat(2) if cfg != 1.0 else ref  # cfg_denoiser sends 1 row when cfg = 1

        def model_fn(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            return self.model(
                x,
                t,
                ref if b == 1 else doubled,
                audio.expand(b, *audio.shape[1:]),
                mask.expand(b, *mask.shape[1:]),
                None if speed is None else speed.expand(b, -1),
                drop_reference=drop if drop_reference else torch.zeros_like(drop),
                drop_audio=drop,
            )

        return model_fn

    def _decode(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """Latents [f,4,h,w] → uint8 RGB frames, a bounded number of pixels per VAE call (its
        activations at full resolution dominate peak memory)."""
        side = latents.shape[-1] * self.model.config.vae_factor
        budget = DECODE_PIXELS_CUDA if self.device.type == "cuda" else DECODE_PIXELS_CPU
        batch = max(1, budget // (side * side))
        for i in range(0, latents.shape[0], batch):
            pixels = self.model.decode(latents[i : i + batch].to(self.dtype)).float()
            rgb = ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            yield from rearrange(rgb, "f c h w -> f h w c").contiguous().cpu().numpy()


def _to_pixels(image: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return rearrange(x, "h w c -> 1 c h w").to(dtype) / 127.5 - 1.0


def _clip_tokens(
    tokens: np.ndarray | TokenStream | LogMelStream,
    first: int,
    frames: int,
    context: int,
    device: torch.device,
) -> torch.Tensor:
    """[1, frames + 2·context, L, D] tokens of one clip with ±context real neighbouring frames;
    the first/last token repeats only before the audio starts or past its end."""
    rows = context_rows(first, frames, context, len(tokens))
    if rows is None:
        raise ValueError("no audio tokens to cut a clip from")
    return torch.from_numpy(tokens[rows])[None].to(device)


def _check_scheduler(scheduler: str | SchedulerMixin) -> None:
    if isinstance(scheduler, str):
        try:
            check_scheduler_name(scheduler)
        except ValueError as e:
            raise GenerateError(str(e)) from None
    elif not isinstance(scheduler, SchedulerMixin):
        kind = type(scheduler).__name__
        raise GenerateError(f"scheduler must be a name or a diffusers scheduler, got {kind}")


def _sampling_scheduler(
    scheduler: str | SchedulerMixin, train_config, prediction_type: str, spacing: str
) -> SchedulerMixin:
    """The scheduler ``render`` samples with: built by name over the training schedule, or the
    caller's own, which must expect what the model predicts."""
    if isinstance(scheduler, str):
        return make_scheduler(scheduler, train_config, prediction_type, spacing)
    if scheduler.config.prediction_type != prediction_type:
        raise GenerateError(
            f"the scheduler expects prediction_type={scheduler.config.prediction_type!r} but the "
            f"model predicts {prediction_type!r}"
        )
    return scheduler


def _ticking(denoise: Denoiser, bar: tqdm) -> Denoiser:
    def run(x: torch.Tensor, t: int) -> torch.Tensor:
        out = denoise(x, t)
        bar.update()
        return out

    return run
