"""Real talking-head videos with a known audio-visual change, made with ffmpeg for the sync tests.

Each helper writes an mp4 whose video stream is the source's (copied, not re-encoded) and whose
audio is the source's moved by a known time, another recording, or whose picture is the source's
first frame held (a still face with speech).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def _ffmpeg(*args: str) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", *args]
    subprocess.run(cmd, check=True, capture_output=True)


def moved_audio(src: Path, dst: Path, shift_s: float, duration_s: float) -> Path:
    """``src`` with its audio ``shift_s`` late (negative: early)."""
    audio_in = (
        ["-itsoffset", f"{shift_s}", "-i", str(src)]
        if shift_s >= 0
        else ["-ss", f"{-shift_s}", "-i", str(src)]
    )
    _ffmpeg("-i", str(src), *audio_in, "-map", "0:v:0", "-map", "1:a:0", "-t", f"{duration_s}",
            "-c:v", "copy", "-c:a", "aac", str(dst))  # fmt: skip
    return dst


def other_audio(src: Path, audio: Path, dst: Path, duration_s: float) -> Path:
    """``src``'s picture with another speaker's recording as its sound."""
    _ffmpeg("-i", str(src), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-t", f"{duration_s}",
            "-c:v", "copy", "-c:a", "aac", str(dst))  # fmt: skip
    return dst


def still_face(src: Path, dst: Path, duration_s: float, fps: int = 25) -> Path:
    """``src``'s first frame held for ``duration_s`` with ``src``'s own speech."""
    held = f"[0:v]trim=end_frame=1,loop=loop={round(duration_s * fps)}:size=1:start=0,setpts=N/{fps}/TB[v]"
    _ffmpeg("-i", str(src), "-filter_complex", held, "-map", "[v]", "-map", "0:a:0", "-t", f"{duration_s}",
            "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst))  # fmt: skip
    return dst


def scaled(src: Path, dst: Path, side: int, duration_s: float) -> Path:
    """``src`` (square) scaled to ``side``² with its own audio: a small real talking-head video."""
    _ffmpeg("-i", str(src), "-t", f"{duration_s}", "-vf", f"scale={side}:{side}:flags=area",
            "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst))  # fmt: skip
    return dst
