"""Sample videos during training (`--sample-every K`): a few frames of the validation clip
rendered with the current EMA weights every K optimizer steps, so a user sees progress.

The validation clip is the first usable clip of the dataset that has audio tokens (shard order,
the same on every run): its first frame is the portrait, its face box the face mask, its own
wav2vec tokens the audio (no audio model is loaded), exactly as training sees them. Rendering is
the generator's (emokit.generate.Generator.render: DDIM, motion frames), run on the live model
with the EMA weights swapped in and no classifier-free guidance (half the cost; progress, not
final quality). Each sample is RUN/stage{k}/samples/step_XXXXXX.png (real frames above the
generated ones) and .mp4 (the generated frames with the clip's audio), both written atomically.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
from diffusers import DDPMScheduler
from PIL import Image

from emokit.config import GenerateConfig, TrainConfig
from emokit.data.atomic import atomic_path
from emokit.data.audio import AudioError, load_audio
from emokit.data.encode import Mp4Writer
from emokit.data.faces import FaceBox
from emokit.generate.generator import FPS, MUX_SR, Generator, Speech
from emokit.generate.portrait import Portrait
from emokit.models import EMOModel
from emokit.train.dataset import Clip, audio_tokens, clip_media, decode_frames, face_mask
from emokit.train.ema import EMA
from emokit.train.trackers import log_image

_GEN = GenerateConfig()


class ClipTokens:
    """Stands in for the AudioEncoder: the validation clip's stored wav2vec tokens."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens
        self.num_layers, self.dim = int(tokens.shape[1]), int(tokens.shape[2])

    def stream(self, wav16k: np.ndarray, num_frames: int, fps: float = FPS) -> np.ndarray:
        return self.tokens[:num_frames]


@dataclass(frozen=True)
class SampleInputs:
    """What every sample of a run renders from (read once, at the start of the stage)."""

    clip_id: str
    portrait: Portrait
    speech: Speech
    tokens: np.ndarray  # [frames, L, D] float16
    real: np.ndarray  # [frames, res, res, 3] uint8: the clip's own frames
    mux: np.ndarray | None  # the clip's audio at MUX_SR for the mp4 (None: the clip has no track)


def validation_inputs(
    clips: list[Clip], resolution: int, frames: int, audio: tuple[int, int]
) -> SampleInputs:
    """The validation clip's first ``frames`` frames, portrait and audio at ``resolution``;
    ``audio`` (layers, dim) sizes zero tokens for a stage-1 dataset without any audio."""
    clip = next((c for c in clips if c.audio_shape), clips[0])
    video, blob = clip_media(clip, audio=clip.audio_shape is not None)
    n = min(frames, clip.num_frames)
    real = decode_frames(video, list(range(n)), clip.fps, resolution)
    if blob is not None and clip.audio_shape:
        tokens = audio_tokens(blob, clip.audio_shape, 0, n).numpy().astype(np.float16)
    else:
        tokens = np.zeros((n, *audio), np.float16)
    s = float(resolution)
    x0, y0, x1, y1 = (v * s / clip.size for v in clip.face_mask_box)
    portrait = Portrait(
        image=real[0],
        face_mask=face_mask(clip.face_mask_box, clip.size, resolution).numpy(),
        face_box=FaceBox(x0, y0, x1, y1, 1.0),
        crop_box=(0.0, 0.0, s, s),
        source_size=(resolution, resolution),
        faces=1,
        warnings=(),
    )
    mux = _clip_audio(video, n)
    # wav16k and mux unused by render(): ClipTokens stands in for wav2vec, the mp4 is written here
    speech = Speech(np.zeros(0, np.float32), np.zeros(0, np.float32), n / FPS, n)
    return SampleInputs(clip.clip_id, portrait, speech, tokens, real, mux)


def _clip_audio(video: bytes, frames: int) -> np.ndarray | None:
    """The clip mp4's audio for the sample's ``frames`` at the mux rate; None without a track."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(video)
        try:
            return load_audio(path, 0.0, frames / FPS, sr=MUX_SR)
        except AudioError:
            return None


class SampleWriter:
    """Renders and writes the samples of one stage (rank 0 only)."""

    def __init__(
        self,
        folder: Path,
        inputs: SampleInputs,
        scheduler: DDPMScheduler,
        stage: int,
        *,
        frames: int,
        motion_frames: int,
        steps: int,
        seed: int,
    ) -> None:
        self.folder, self.inputs, self.stage = folder, inputs, stage
        self.alphas = scheduler.alphas_cumprod.clone()
        self.prediction_type = str(scheduler.config.prediction_type)
        self.frames, self.motion_frames, self.steps, self.seed = frames, motion_frames, steps, seed
        self.log: Callable[[str], None] = lambda _: None

    @classmethod
    def for_stage(
        cls,
        cfg: TrainConfig,
        clips: list[Clip],
        resolution: int,
        audio: tuple[int, int],
        scheduler: DDPMScheduler,
        stage: int,
        stage_dir: Path,
        log: Callable[[str], None],
    ) -> SampleWriter | None:
        """The writer of ``cfg``'s samples for a stage (None when ``sample_every`` is 0)."""
        if not cfg.sample_every:
            return None
        inputs = validation_inputs(clips, resolution, cfg.sample_frames, audio)
        self = cls(
            stage_dir / "samples",
            inputs,
            scheduler,
            stage,
            frames=cfg.frames,
            motion_frames=cfg.motion_frames,
            steps=cfg.sample_steps,
            seed=cfg.seed,
        )
        self.log = log
        log(f"stage {stage}: sample of clip {inputs.clip_id} every {cfg.sample_every} steps: {self.folder}")
        return self

    def write(self, acc: Any, model: EMOModel, ema: EMA | None, step: int) -> Path:
        """Render and write the sample of ``step``; the grid also goes to the trackers."""
        png, mp4, grid = self(model, ema, step)
        log_image(acc, "samples", grid, step)
        self.log(f"sample step {step}: {png}, {mp4.name}")
        return png

    def paths(self, step: int) -> tuple[Path, Path]:
        name = f"step_{step:06d}"
        return self.folder / f"{name}.png", self.folder / f"{name}.mp4"

    def __call__(self, model: EMOModel, ema: EMA | None, step: int) -> tuple[Path, Path, np.ndarray]:
        """Render with ``ema``'s weights swapped into ``model`` (restored after, with its train
        mode); returns the PNG, the mp4 and the grid image."""
        was_training = model.training
        try:
            with ema.swapped_in() if ema is not None else nullcontext():
                frames = self._render(model)
        finally:
            model.train(was_training)
        grid = np.concatenate(
            [np.concatenate(list(self.inputs.real), axis=1), np.concatenate(list(frames), axis=1)], axis=0
        )
        png, mp4 = self.paths(step)
        with atomic_path(png) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        side = self.inputs.portrait.size
        with Mp4Writer(mp4, fps=FPS, size=(side, side), audio=self.inputs.mux, audio_sr=MUX_SR) as w:
            for frame in frames:
                w.write(frame)
        return png, mp4, grid

    def _render(self, model: EMOModel) -> np.ndarray:
        device = next(model.parameters()).device
        gen = Generator.from_parts(
            model,
            self.alphas,
            ClipTokens(self.inputs.tokens),  # type: ignore[arg-type]
            device,
            dtype="float32",  # the live training weights: no cast (autocast stays the loop's)
            frames=self.frames,
            motion_frames=self.motion_frames,
            progress=False,
            trained_stage=self.stage,
            prediction_type=self.prediction_type,
        )
        out = gen.render(
            self.inputs.portrait,
            self.inputs.speech,
            steps=self.steps,
            cfg=1.0,
            seed=self.seed,
            speed=_GEN.speed,
        )
        return np.stack(list(out))
