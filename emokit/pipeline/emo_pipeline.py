"""EMOPipeline: the diffusers pipeline of a trained EMO model — load, share and sample it.

Why: users come from diffusers. A finished training stage (``RUN/stageN/final``) is a diffusers
pipeline folder (``model_index.json`` + one folder per component, see ``emokit.models.parts``), so
``EMOPipeline.from_pretrained(DIR_OR_HUB_ID)``, ``save_pretrained``, ``push_to_hub``, ``torch_dtype``
and ``variant`` all work as for any diffusers model, and calling the pipeline renders a video.

Sampling itself is the Generator's (``emokit.generate.generator``): clip after clip, ReferenceNet
once per clip, a diffusers scheduler (DDIM by default) + classifier-free guidance, frames streamed
to the mp4 writer so memory stays flat in audio length. The pipeline hands it the joined model, the
scheduler's noise schedule and the audio encoder (wav2vec or logmel); nothing is computed twice
and the frames are those of ``Generator.from_parts``.

``model_index.json`` names emokit's classes by module (e.g. ``["emokit.models.parts",
"EMOBackbone"]``); diffusers resolves such names from modules already imported, which importing
``EMOPipeline`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from emokit.config import GenerateConfig, LabelConfig
from emokit.data.logmel import LogMelEncoder
from emokit.data.wav2vec import AudioEncoder, open_audio_encoder
from emokit.generate.generator import GenerationResult, Generator, Speech
from emokit.generate.portrait import Portrait
from emokit.models import EMOModel
from emokit.models.parts import COMPONENTS, RAW_VARIANT, join_parts, split_model

_GEN = GenerateConfig()
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the Hub spells repo ids
_LABEL = LabelConfig()


__all__ = ["RAW_VARIANT", "EMOPipeline", "PipelineLoadError", "load_pipeline"]


class PipelineLoadError(OSError):
    """A folder or hub id that does not load as an EMOPipeline (one-line reason)."""


class EMOPipeline(DiffusionPipeline):
    """Portrait + speech → talking-head video with a trained EMO model.

    Example::

        pipe = EMOPipeline.from_pretrained("runs/emo/stage3/final").to("cuda")
        result = pipe("me.jpg", "speech.wav", "me_talking.mp4", num_inference_steps=40)

    ``trained_stage``: the last EMO stage the weights went through (speed input needs 3);
    ``audio_model`` / ``audio_layers``: the audio model (wav2vec2 hub id or folder, or ``logmel``)
    and hidden layers the training data was labelled with, loaded when the pipeline is first called.
    """

    model_cpu_offload_seq = "audio_proj->speed_encoder->face_locator->reference_net->backbone->vae"

    def __init__(
        self,
        vae: ModelMixin,
        reference_net: ModelMixin,
        backbone: ModelMixin,
        face_locator: ModelMixin,
        audio_proj: ModelMixin,
        speed_encoder: ModelMixin,
        scheduler: DDPMScheduler,
        trained_stage: int = 3,
        audio_model: str = _LABEL.audio_model,
        audio_layers: str = _LABEL.audio_layers,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            reference_net=reference_net,
            backbone=backbone,
            face_locator=face_locator,
            audio_proj=audio_proj,
            speed_encoder=speed_encoder,
            scheduler=scheduler,
        )
        self.register_to_config(
            trained_stage=trained_stage, audio_model=audio_model, audio_layers=audio_layers
        )
        self._joined: tuple[tuple[int, ...], EMOModel] | None = None
        self._encoder: AudioEncoder | LogMelEncoder | None = None

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls, model: EMOModel, scheduler: DDPMScheduler, trained_stage: int = 3, **config: Any
    ) -> EMOPipeline:
        """A pipeline around an in-memory EMOModel (same tensors: training's final save, notebooks)."""
        pipe = cls(**split_model(model), scheduler=scheduler, trained_stage=trained_stage, **config)
        pipe._joined = (pipe._part_ids(), model)
        return pipe

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> EMOPipeline:
        """diffusers' ``from_pretrained`` (folder or hub id; ``cache_dir``, ``local_files_only``,
        ``torch_dtype``, ``variant="raw"`` for a run's non-EMA weights, ...) with a one-line error
        for a path or hub id that does not load (offline and not cached, not a pipeline folder)."""
        name = str(pretrained_model_name_or_path)
        try:
            return super().from_pretrained(name, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            hint = "" if Path(name).exists() else "; a hub id needs the network or a cached copy (cache_dir)"
            raise PipelineLoadError(f"cannot load EMOPipeline from {name!r}: {reason}{hint}") from None

    @property
    def model(self) -> EMOModel:
        """The components joined into one EMOModel (same tensors; rebuilt if a component changes)."""
        ids = self._part_ids()
        if self._joined is None or self._joined[0] != ids:
            self._joined = (ids, join_parts({name: getattr(self, name) for name in COMPONENTS}))
        return self._joined[1]

    def _part_ids(self) -> tuple[int, ...]:
        return tuple(id(getattr(self, name)) for name in COMPONENTS)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    def set_audio_encoder(self, encoder: AudioEncoder | LogMelEncoder) -> None:
        """Use an already loaded audio encoder instead of loading ``config.audio_model``."""
        self._encoder = encoder

    def audio_encoder(self) -> AudioEncoder | LogMelEncoder:
        """The audio encoder (wav2vec or logmel), loaded on first use on the pipeline's device."""
        if self._encoder is None or getattr(self._encoder, "device", self.device) != self.device:
            self._encoder = open_audio_encoder(
                self.config.audio_model,
                layers=self.config.audio_layers,
                device=self.device,
                chunk_s=_LABEL.audio_chunk_s,
                overlap_s=_LABEL.audio_overlap_s,
                precision=_LABEL.audio_precision,
            )
        return self._encoder

    def generator(
        self,
        frames: int = _GEN.frames,
        motion_frames: int = _GEN.motion_frames,
        timestep_spacing: str = _GEN.timestep_spacing,
        crf: int = _GEN.crf,
        progress: bool = True,
        scheduler: str | SchedulerMixin = _GEN.scheduler,
    ) -> Generator:
        """The Generator that samples with this pipeline's model, schedule, device and dtype."""
        return Generator.from_parts(
            self.model,
            self.scheduler.alphas_cumprod.clone(),
            self.audio_encoder(),
            self.device,
            dtype=str(self.dtype).removeprefix("torch."),
            frames=frames,
            motion_frames=motion_frames,
            timestep_spacing=timestep_spacing,
            crf=crf,
            progress=progress,
            trained_stage=int(self.config.trained_stage),
            prediction_type=str(self.scheduler.config.prediction_type),
            scheduler=scheduler,
        )

    # ---- sampling -------------------------------------------------------------------------
    def __call__(
        self,
        portrait: str | Path | Portrait,
        audio: str | Path | Speech,
        out_path: str | Path,
        num_inference_steps: int = _GEN.steps,
        guidance_scale: float = _GEN.cfg,
        seed: int = _GEN.seed,
        speed: float | None = _GEN.speed,
        size: int = _GEN.size,
        frames: int = _GEN.frames,
        motion_frames: int = _GEN.motion_frames,
        timestep_spacing: str = _GEN.timestep_spacing,
        crf: int = _GEN.crf,
        progress: bool = True,
        scheduler: str | SchedulerMixin = _GEN.scheduler,
        guidance: str = _GEN.guidance,
    ) -> GenerationResult:
        """Render ``out_path`` (H.264 + AAC, 30 FPS, as long as the audio): inputs are checked
        before any compute, frames stream to the writer clip by clip, and the mp4 appears only
        complete. ``size`` 0: the resolution the model was trained at; ``speed``: head rotation in
        degrees per frame (stage-3 models); ``scheduler``: ddim, dpmpp, unipc, euler or a diffusers
        scheduler; ``guidance``: what CFG's unconditional half drops, "both" or "audio"."""
        gen = self.generator(frames, motion_frames, timestep_spacing, crf, progress, scheduler)
        return gen(
            portrait,
            audio,
            out_path,
            steps=num_inference_steps,
            cfg=guidance_scale,
            seed=seed,
            speed=speed,
            size=size,
            guidance=guidance,
        )

    def frames(
        self,
        portrait: Portrait,
        speech: Speech,
        num_inference_steps: int = _GEN.steps,
        guidance_scale: float = _GEN.cfg,
        seed: int = _GEN.seed,
        speed: float | None = _GEN.speed,
        frames: int = _GEN.frames,
        motion_frames: int = _GEN.motion_frames,
        timestep_spacing: str = _GEN.timestep_spacing,
        progress: bool = True,
        scheduler: str | SchedulerMixin = _GEN.scheduler,
        guidance: str = _GEN.guidance,
    ) -> Iterator[np.ndarray]:
        """The video's RGB uint8 frames one by one (a generator: each clip is sampled when its
        first frame is asked for), for callers with their own writer or display."""
        gen = self.generator(frames, motion_frames, timestep_spacing, progress=progress, scheduler=scheduler)
        return gen.render(
            portrait,
            speech,
            steps=num_inference_steps,
            cfg=guidance_scale,
            seed=seed,
            speed=speed,
            guidance=guidance,
        )


def load_pipeline(source: str | Path, progress: bool = True, **kwargs: Any) -> EMOPipeline:
    """The pipeline of a training run folder (its latest finished stage, checksums verified), of a
    pipeline folder, or of a hub id; ``kwargs`` go to ``EMOPipeline.from_pretrained``. A run
    finished before the pipeline layout (``final/model``) is wrapped in memory. ``progress=False``
    hides diffusers' loading bar (a quiet command prints only its result or one error line)."""
    from diffusers.utils import logging as diffusers_logging

    was_enabled = diffusers_logging.is_progress_bar_enabled()
    if not progress:
        diffusers_logging.disable_progress_bar()
    try:
        return _load_pipeline(source, **kwargs)
    finally:
        if was_enabled:
            diffusers_logging.enable_progress_bar()


def _load_pipeline(source: str | Path, **kwargs: Any) -> EMOPipeline:
    from emokit.train import checkpoint as ckpt
    from emokit.train.noise import load_scheduler

    run = Path(source)
    if not run.exists() and not _HUB_ID.fullmatch(str(source)):
        raise PipelineLoadError(f"checkpoint not found: {source} (neither a folder nor an org/name hub id)")
    stage = ckpt.latest_finished_stage(run) if run.is_dir() else None
    if stage is None:
        return EMOPipeline.from_pretrained(source, **kwargs)
    final = ckpt.final_checkpoint(run, stage)
    assert final is not None  # latest_finished_stage found it
    ckpt.verify_checkpoint(final)
    if ckpt.is_pipeline(final):
        return EMOPipeline.from_pretrained(final, **kwargs)
    model = ckpt.load_for_inference(run, stage)
    return EMOPipeline.from_model(model, load_scheduler(final), trained_stage=stage)
