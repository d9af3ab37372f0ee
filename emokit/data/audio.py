"""Audio loading for wav2vec and muxing: any container/codec -> mono float32 at a fixed rate.

Times are seconds on the container's clock, the same clock as emokit.data.decode (pts minus the
container start time), so an audio window [start_s, end_s) lines up with the video frames of the
same window even when the streams start at different times. Samples are placed by their
timestamps: a stream that starts late or ends early is padded with silence rather than shifted.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emokit.data.probe import container_origin_s, error_text

# Seek this far before the window so codecs with pre-roll (AAC) are settled at start_s;
# windows starting earlier than this decode from the beginning instead of seeking.
SEEK_PREROLL_S = 0.5

__all__ = ["AudioError", "load_audio"]


class AudioError(ValueError):
    """A file has no audio stream, cannot be decoded, or has no audio in the window (one line)."""


def load_audio(
    path: str | Path, start_s: float = 0.0, end_s: float | None = None, sr: int = 16000
) -> np.ndarray:
    """Mono float32 in [-1, 1] at ``sr`` of [start_s, end_s) (to the end of the audio if None).

    Channels are averaged (not swresample's downmix matrix, so a two-speaker stereo file keeps
    both speakers at equal weight). With ``end_s`` the result has exactly
    round((end_s - start_s) * sr) samples. Raises AudioError with a one-line reason.
    """
    p = Path(path)
    if sr <= 0:
        raise AudioError(f"sample rate must be positive, got {sr}")
    if not math.isfinite(start_s) or (end_s is not None and not math.isfinite(end_s)):
        raise AudioError(f"window {start_s}-{end_s} s is not finite")
    if end_s is not None and end_s <= start_s:
        raise AudioError(f"window {start_s:.3f}-{end_s:.3f} s is empty")
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise AudioError(f"{p.name}: cannot open ({error_text(e)})") from e
    with container:
        if not container.streams.audio:
            raise AudioError(f"{p.name}: no audio stream")
        stream = container.streams.audio[0]
        origin = container_origin_s(container)
        # Window start as a sample index on the stream's own clock (pts scaled to sr).
        base = round((start_s + origin) * sr)
        n_out = None if end_s is None else round((end_s - start_s) * sr)
        pieces = _decode_window(container, stream, p.name, start_s, origin, base, n_out, sr)
    end = max((off + len(x) for off, x in pieces), default=0)
    if n_out is None:
        n_out = max(end, 0)
    if end <= 0 or min(off for off, _ in pieces) >= n_out:  # also: no pieces at all
        until = "the end" if end_s is None else f"{end_s:.3f} s"
        raise AudioError(f"{p.name}: no audio in the window {start_s:.3f} s to {until}")
    out = np.zeros(n_out, dtype=np.float32)
    for off, x in pieces:  # later pieces win where timestamps overlap (they never do in practice)
        lo, hi = max(off, 0), min(off + len(x), n_out)
        if lo < hi:
            out[lo:hi] = x[lo - off : hi - off]
    return np.clip(out, -1.0, 1.0, out=out)


def _decode_window(container, stream, name, start_s, origin, base, n_out, sr):
    """(offset into the window, mono samples) pieces covering the window, decoded once.

    Placement uses the resampler's output pts (in 1/sr), which follow the input timestamps.
    Packets that fail to decode are skipped (their span stays silent), as ffmpeg does.
    """
    seeked = start_s > SEEK_PREROLL_S
    try:
        if seeked:
            target = start_s - SEEK_PREROLL_S + origin
            container.seek(math.floor(target / stream.time_base), stream=stream, backward=True)
        pieces, bad, late = _decode_from_here(container, stream, base, n_out, sr, check_late=seeked)
        if late:  # the seek landed after the window start: decode from the beginning instead
            container.seek(0)
            pieces, bad, _ = _decode_from_here(container, stream, base, n_out, sr, check_late=False)
    except av.FFmpegError as e:
        raise AudioError(f"{name}: cannot decode audio ({error_text(e)})") from e
    if not pieces and bad:
        raise AudioError(f"{name}: audio stream could not be decoded ({bad} bad packets)")
    if not pieces and not seeked:
        raise AudioError(f"{name}: no decodable audio")
    return pieces


def _grid_lead(frame: av.AudioFrame, sr: int) -> av.AudioFrame | None:
    """Silence that moves the resampler's start onto the global sample grid.

    swresample starts its output phase at the first input sample; starting every decode (from
    the file start or after a seek) at an input sample that maps to a whole output sample makes
    the same instant come out as the same samples however the window was reached.
    """
    if frame.pts is None:
        return None
    q = frame.sample_rate // math.gcd(frame.sample_rate, sr)
    d = frame.pts % q
    if d == 0:
        return None
    lead = av.AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=d)
    for plane in lead.planes:
        plane.update(bytes(plane.buffer_size))
    lead.sample_rate = frame.sample_rate
    lead.pts = frame.pts - d
    lead.time_base = frame.time_base
    return lead


def _decode_from_here(container, stream, base, n_out, sr, check_late):
    """Decode from the current position; returns (pieces, bad packet count, landed late)."""
    resampler = av.AudioResampler(format="fltp", rate=sr)
    pieces: list[tuple[int, np.ndarray]] = []
    expected = 0  # next contiguous output index, for frames without pts
    bad = 0
    done = False
    first = True

    def take(frames) -> None:
        nonlocal expected, done
        for f in frames:
            x = f.to_ndarray()
            x = x.mean(axis=0) if x.shape[0] > 1 else x[0]
            off = (f.pts - base) if f.pts is not None else expected
            expected = off + len(x)
            if off + len(x) <= 0:
                continue
            pieces.append((off, x.astype(np.float32, copy=False)))
            if n_out is not None and off + len(x) >= n_out:
                done = True

    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except (av.InvalidDataError, av.error.PatchWelcomeError):
            bad += 1
            continue
        for frame in frames:
            if frame.pts is not None:  # timestamps in input samples: exact phase arithmetic
                frame.pts = round(frame.pts * frame.time_base * frame.sample_rate)
                frame.time_base = Fraction(1, frame.sample_rate)
            if first:
                first = False
                if check_late and frame.pts is not None and frame.pts * sr > base * frame.sample_rate:
                    return pieces, bad, True
                lead = _grid_lead(frame, sr)
                if lead is not None:
                    take(resampler.resample(lead))
            take(resampler.resample(frame))
        if done:
            break
    if not done:
        take(resampler.resample(None))
    return pieces, bad, False
