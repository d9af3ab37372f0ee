"""Streaming H.264 + AAC mp4 writing, in-process with PyAV (label's crops, generate's output).

Frames are encoded as they arrive (memory stays flat for any length), at exactly ``fps`` with
timestamps k/fps. The audio track is cut or padded with silence to exactly the video's duration
(frames / fps) and interleaved with the video as it goes, so players keep A/V in sync to the end.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import cv2
import numpy as np

from emokit.data.atomic import atomic_path

# Sample rates the AAC encoder accepts; anything else is resampled to 48 kHz.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)

__all__ = ["EncodeError", "Mp4Writer", "encode_mp4"]


class EncodeError(ValueError):
    """Frames or audio that cannot be written as H.264/AAC mp4 (one-line reason)."""


def _rate(fps: float | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise EncodeError(f"fps must be positive, got {fps}")
    return rate


class Mp4Writer:
    """Context manager writing RGB frames (and optional mono audio) to an mp4 path or file object.

    A path is written atomically (temp file + rename on success; nothing is left on error).
    ``size`` (w, h) must be even for yuv420p; None takes it from the first frame.
    """

    def __init__(
        self,
        dest: str | Path | BinaryIO,
        fps: float | Fraction = 30,
        size: tuple[int, int] | None = None,
        crf: int = 18,
        audio: np.ndarray | None = None,
        audio_sr: int = 16000,
        preset: str = "veryfast",
        audio_bitrate: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.fps = _rate(fps)
        self.size = size
        if size is not None:
            self._check_size(size)
        self.crf, self.preset, self.threads = int(crf), preset, threads
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise EncodeError(f"audio must be mono [samples], got shape {audio.shape}")
            if audio_sr <= 0:
                raise EncodeError(f"audio_sr must be positive, got {audio_sr}")
        self.audio, self.audio_sr, self.audio_bitrate = audio, int(audio_sr), audio_bitrate
        self.dest = dest
        self.frames = 0
        self._atomic: Any = None  # atomic_path context for a path destination
        self._container: Any = None  # PyAV handles: set in __enter__ and on the first frame
        self._video: Any = None
        self._audio: Any = None
        self._resampler: Any = None
        self._audio_sent = 0  # input samples handed to the audio encoder so far

    @staticmethod
    def _check_size(size: tuple[int, int]) -> None:
        w, h = size
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise EncodeError(f"frame size {w}x{h} must be positive and even for yuv420p")

    def __enter__(self) -> Mp4Writer:
        target, options = self.dest, {}
        if isinstance(self.dest, (str, Path)):
            self._atomic = atomic_path(self.dest)
            target = str(self._atomic.__enter__())
            # Index first, so browsers start playing before the whole file arrives. (ffmpeg
            # rewrites the file by name for this, which a file object cannot offer.)
            options = {"movflags": "+faststart"}
        try:
            self._container = av.open(target, mode="w", format="mp4", options=options)
        except BaseException as e:
            self._release(e)
            raise
        return self

    def _open_streams(self, w: int, h: int) -> None:
        c = self._container
        # A keyframe every second: trainers seek to random frames inside a clip.
        opts = {"crf": str(self.crf), "preset": self.preset, "g": str(max(1, round(float(self.fps))))}
        if self.threads:
            opts["threads"] = str(self.threads)
        v = c.add_stream("libx264", rate=self.fps, options=opts)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.time_base = 1 / self.fps
        v.codec_context.time_base = 1 / self.fps
        # Tag what swscale's RGB->YUV conversion produces (BT.601, limited range) so players
        # convert back with the same matrix.
        v.codec_context.colorspace = av.video.reformatter.Colorspace.ITU601
        v.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
        self._video = v
        if self.audio is not None:
            rate = self.audio_sr if self.audio_sr in AAC_RATES else 48000
            a = c.add_stream("aac", rate=rate, layout="mono")
            a.bit_rate = self.audio_bitrate or (64000 if rate <= 24000 else 96000)
            a.time_base = Fraction(1, rate)
            self._audio = a
            if rate != self.audio_sr:
                self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)

    def write(self, frame_rgb: np.ndarray) -> None:
        """Encode one RGB uint8 HxWx3 frame (shown for 1/fps seconds)."""
        if self._container is None:
            raise EncodeError("Mp4Writer.write() outside its `with` block")
        frame_rgb = np.asarray(frame_rgb)
        if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            raise EncodeError(f"expected an RGB uint8 HxWx3 frame, got {frame_rgb.dtype} {frame_rgb.shape}")
        h, w = frame_rgb.shape[:2]
        if self._video is None:
            if self.size is None:
                self._check_size((w, h))
                self.size = (w, h)
            self._open_streams(*self.size)
        assert self.size is not None  # set with the first frame at the latest
        if (w, h) != tuple(self.size):
            raise EncodeError(f"frame is {w}x{h}, the video is {self.size[0]}x{self.size[1]}")
        # Sizes are even (checked above), so OpenCV's BT.601 limited-range RGB→I420 applies:
        # ~10× faster than swscale's reformat for the same conversion.
        i420 = np.asarray(cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = self.frames
        frame.time_base = self._video.codec_context.time_base
        self._container.mux(self._video.encode(frame))
        self.frames += 1
        self._send_audio(self.frames)

    def _send_audio(self, frames: int) -> None:
        """Encode the audio up to the end of ``frames`` video frames (silence past its end)."""
        if self._audio is None or self.audio is None:
            return
        upto = round(frames / self.fps * self.audio_sr)
        n = upto - self._audio_sent
        if n <= 0:
            return
        chunk = self.audio[self._audio_sent : upto]
        if chunk.size < n:
            chunk = np.concatenate([chunk, np.zeros(n - chunk.size, np.float32)])
        af = av.AudioFrame.from_ndarray(np.clip(chunk, -1.0, 1.0)[None, :], format="fltp", layout="mono")
        af.sample_rate = self.audio_sr
        af.pts = self._audio_sent
        af.time_base = Fraction(1, self.audio_sr)
        self._audio_sent = upto
        frames_out = self._resampler.resample(af) if self._resampler else [af]
        for f in frames_out:
            self._container.mux(self._audio.encode(f))

    def close(self) -> None:
        """Flush the encoders and finish the file (renamed into place for a path)."""
        if self._container is None:
            return
        try:
            if self._video is None:
                raise EncodeError("no frames were written")
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                if self._resampler is not None:
                    for f in self._resampler.resample(None):
                        self._container.mux(self._audio.encode(f))
                self._container.mux(self._audio.encode(None))
            self._container.close()
            self._container = None
        except BaseException as e:
            self._abort(e)
            raise
        self._release(None)

    def _release(self, exc: BaseException | None) -> None:
        """Finish a path's atomic write: rename into place on success, delete the temp on error."""
        cm, self._atomic = self._atomic, None
        if cm is not None:
            cm.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    def _abort(self, exc: BaseException) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._release(exc)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc if exc is not None else exc_type())


def encode_mp4(
    frames: Iterable[np.ndarray],
    fps: float | Fraction = 30,
    audio: np.ndarray | None = None,
    audio_sr: int = 16000,
    crf: int = 18,
    preset: str = "veryfast",
) -> bytes:
    """mp4 bytes of RGB frames (+ mono audio cut/padded to the video): a shard cell's content."""
    buf = io.BytesIO()
    with Mp4Writer(buf, fps=fps, crf=crf, audio=audio, audio_sr=audio_sr, preset=preset) as w:
        for frame in frames:
            w.write(frame)
    return buf.getvalue()
