"""Probe a media file's container without decoding: streams, rates, start times, duration.

Videos in the wild put audio first, start video and audio at different times and vary their frame
rate; everything downstream reads these facts from here instead of assuming stream 0 at 0 s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av


class ProbeError(ValueError):
    """The file is not a usable video; the message is a one-line reason."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    size_bytes: int
    duration_s: float
    fps: float  # average frame rate of the video stream
    width: int  # coded size; display size may swap with rotation
    height: int
    video_stream: int
    audio_stream: int | None
    video_start_s: float
    audio_start_s: float | None
    video_streams: int = 1  # how many video streams the file has (the first is used)

    @property
    def has_audio(self) -> bool:
        return self.audio_stream is not None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash, so clip ids survive renames and a changed file is never mistaken as done."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def error_text(err: BaseException) -> str:
    """An FFmpeg/PyAV error as one line of text (its message, or its type when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def container_origin_s(container: av.container.InputContainer) -> float:
    """The container's start time. All emokit times are on the container clock (pts minus this),
    the clock ffmpeg prints and seeks on, so video and audio times agree across modules."""
    return 0.0 if container.start_time is None else container.start_time / av.time_base


def _start_s(stream: av.stream.Stream, origin: float) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base) - origin


def probe(path: str | Path) -> VideoInfo:
    """Container facts of ``path``; raises :class:`ProbeError` with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ProbeError(f"cannot read file: {e.strerror}") from None
    if size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise ProbeError(f"not a readable media file ({e.strerror or type(e).__name__})") from None
    with container:
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise ProbeError(f"no video stream (streams: {', '.join(kinds)})")
        v = container.streams.video[0]
        a = container.streams.audio[0] if container.streams.audio else None
        if not v.width or not v.height:
            raise ProbeError("video stream has no frame size (corrupt header?)")
        duration = 0.0
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = v.average_rate or v.guessed_rate or v.base_rate
        origin = container_origin_s(container)
        return VideoInfo(
            path=str(path),
            size_bytes=size,
            duration_s=duration,
            fps=float(rate) if rate else 0.0,
            width=v.width,
            height=v.height,
            video_stream=v.index,
            audio_stream=a.index if a is not None else None,
            video_start_s=_start_s(v, origin),
            audio_start_s=_start_s(a, origin) if a is not None else None,
            video_streams=len(container.streams.video),
        )
