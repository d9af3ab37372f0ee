"""A speech track as generation needs it, and the error generation reports in one line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emokit.data.audio import load_audio
from emokit.data.wav2vec import SAMPLE_RATE

__all__ = ["FPS", "MUX_SR", "GenerateError", "Speech"]

FPS = 30
MUX_SR = 48000  # the muxed audio track: full-band, whatever rate the model listens at


class GenerateError(ValueError):
    """Settings or inputs generation cannot work with (one-line reason)."""


@dataclass(frozen=True)
class Speech:
    """A speech track decoded once: 16 kHz for wav2vec, 48 kHz for the output's audio."""

    wav16k: np.ndarray
    mux: np.ndarray
    seconds: float
    frames: int  # video frames it needs at 30 FPS: ceil(seconds × 30)

    @classmethod
    def load(cls, path: str | Path) -> Speech:
        """Decode ``path``; raises ``AudioError`` (no audio stream, undecodable) with one line."""
        wav = load_audio(path, sr=SAMPLE_RATE)
        seconds = wav.size / SAMPLE_RATE
        frames = -(-wav.size * FPS // SAMPLE_RATE)  # exact ceil(seconds × FPS) in integers
        if frames == 0:
            raise GenerateError(f"{Path(path).name}: the audio is empty")
        return cls(wav, load_audio(path, sr=MUX_SR), seconds, frames)
