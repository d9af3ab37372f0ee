"""Frame-accurate video decoding to a constant frame rate, in-process with PyAV.

Every later measurement (faces, pose, velocities, wav2vec alignment) assumes one frame per 1/fps
seconds, so the source is resampled here by sample-and-hold: output frame k shows what a player
shows at t_k = start_s + k/fps, i.e. the latest source frame whose presentation time is <= t_k.
That one rule covers 25 -> 30 FPS, 29.97 -> 30 FPS and variable-frame-rate phone footage.

Times are in seconds on the container's clock, the same clock ffmpeg prints and ``ffmpeg -ss``
uses: a frame's time is ``pts * time_base - container.start_time``. A video stream that starts
after the container (scene_cuts_multiface_2997fps.mp4: its first frame is at 0.844 s) keeps that
offset, so video and audio times from this module and emokit.data.audio stay in sync.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from emokit.data.probe import container_origin_s, error_text

# Times rounded to the millisecond (as people and logs write them) still select the frame they
# name; far below any real frame interval.
PTS_TOLERANCE_S = 1e-3

__all__ = ["PTS_TOLERANCE_S", "VideoError", "frame_times", "read_frames", "read_video_frames"]


class VideoError(ValueError):
    """A video cannot be opened or decoded, or a window does not fit it (one-line reason)."""


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    try:
        return av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{p.name}: cannot open as a video ({error_text(e)})") from e


def _pick_stream(container: av.container.InputContainer, video_stream: int | None, name: str):
    """First video stream, or the given absolute stream index (audio can be stream 0)."""
    if video_stream is None:
        if not container.streams.video:
            raise VideoError(f"{name}: no video stream")
        return container.streams.video[0]
    if not 0 <= video_stream < len(container.streams):
        raise VideoError(f"{name}: stream {video_stream} does not exist")
    stream = container.streams[video_stream]
    if stream.type != "video":
        raise VideoError(f"{name}: stream {video_stream} is {stream.type}, not video")
    return stream


def frame_times(path: str | Path, video_stream: int | None = None, decode: bool = False) -> np.ndarray:
    """Presentation time (s) of every frame, in presentation order: frame index -> time.

    A cheap index of a file's frames (ingest records the same times during its scene pass, so it
    does not need this; tools and tests that map frame indices to times do). By default it reads packet
    timestamps only (no decoding, fast even for hours of video); ``decode=True`` decodes every
    frame instead, for streams whose packets lack timestamps.
    """
    name = Path(path).name
    with _open(path) as container:
        stream = _pick_stream(container, video_stream, name)
        tb = stream.time_base
        origin = container_origin_s(container)
        pts: list[int] = []
        try:
            if not decode:
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard or packet.is_corrupt:
                        continue
                    if packet.pts is None:
                        decode = True
                        break
                    pts.append(packet.pts)
            if decode:
                container.seek(0)
                stream.codec_context.thread_type = "AUTO"
                pts = [f.pts for f in container.decode(stream) if f.pts is not None]
        except av.FFmpegError as e:
            raise VideoError(f"{name}: cannot read video frames ({error_text(e)})") from e
    if not pts:
        raise VideoError(f"{name}: no video frames")
    return np.array(sorted(pts), dtype=np.int64) * float(tb) - origin


def _window_frames(start_s: float, end_s: float, fps: float) -> int:
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise VideoError(f"window {start_s}-{end_s} s is not finite")
    if fps <= 0:
        raise VideoError(f"fps must be positive, got {fps}")
    n = round((end_s - start_s) * fps)
    if n <= 0:
        raise VideoError(f"window {start_s:.3f}-{end_s:.3f} s is shorter than one frame at {fps} fps")
    return n


def _orientation(frame: av.VideoFrame) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip cols) that make a frame upright, from its display matrix.

    The matrix maps stored pixel (x, y) to display (a*x + c*y, b*x + d*y); only axis-aligned
    matrices (rotations by multiples of 90 degrees, with or without mirroring) exist in practice.
    """
    # PyAV's stubs key side data by str only; the container takes the enum.
    sd = frame.side_data.get(SideDataType.DISPLAYMATRIX) if frame.side_data else None  # type: ignore[call-overload]
    if sd is None:
        return False, False, False
    m = struct.unpack("9i", bytes(sd))
    a, b, c, d = m[0], m[1], m[3], m[4]
    big = max(abs(a), abs(b), abs(c), abs(d))
    if big == 0:
        return False, False, False
    small = big // 100
    if abs(b) <= small and abs(c) <= small:  # x' = a x, y' = d y
        return False, d < 0, a < 0
    if abs(a) <= small and abs(d) <= small:  # x' = c y, y' = b x: swap axes
        return True, b < 0, c < 0
    raise VideoError(f"unsupported display rotation {frame.rotation} degrees (not a multiple of 90)")


def _to_rgb(frame: av.VideoFrame, max_width: int | None) -> np.ndarray:
    """Upright RGB uint8 HxWx3; scaled in swscale (area filter) when wider than max_width."""
    transpose, flip_rows, flip_cols = _orientation(frame)
    w, h = frame.width, frame.height
    disp_w, disp_h = (h, w) if transpose else (w, h)
    if max_width is not None and disp_w > max_width:
        out_w, out_h = max_width, max(1, round(disp_h * max_width / disp_w))
        sw, sh = (out_h, out_w) if transpose else (out_w, out_h)
        arr = frame.to_ndarray(width=sw, height=sh, format="rgb24", interpolation="AREA")
    else:
        arr = frame.to_ndarray(format="rgb24")
    if not (transpose or flip_rows or flip_cols):
        # Rows may carry PyAV's line padding; a strided view is fine for numpy and OpenCV and
        # saves a full-frame copy (~5 ms per 1080×1920 frame).
        return arr
    if transpose:
        arr = arr.transpose(1, 0, 2)
    if flip_rows:
        arr = arr[::-1]
    if flip_cols:
        arr = arr[:, ::-1]
    return np.ascontiguousarray(arr)


def _frames_from(container, stream, start_s: float, name: str) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded (frame, time) from the last keyframe at or before start_s onwards.

    Seeking is index-based and can land after the target on some files; then seek further back
    (1 s, 2 s, 4 s, ...) until the first decoded frame is not after start_s or we are at the
    stream's beginning, where a start before the first frame is allowed.
    """
    tb = stream.time_base
    origin = container_origin_s(container)
    begin_s = float(stream.start_time * tb) - origin if stream.start_time is not None else 0.0
    default_dt = 1.0 / float(stream.average_rate or stream.guessed_rate or 30)
    target, back = start_s, 1.0
    while True:
        at_begin = target <= begin_s + PTS_TOLERANCE_S
        seek_s = begin_s if at_begin else target
        container.seek(math.floor((seek_s + origin) / tb), stream=stream, backward=True)
        gen = container.decode(stream)
        prev_t: float | None = None
        first = True
        for frame in gen:
            if frame.pts is not None:
                t = float(frame.pts * tb) - origin
            else:  # no timestamp: continue the previous frame's timing
                t = begin_s if prev_t is None else prev_t + default_dt
            if first:
                first = False
                if t > start_s + PTS_TOLERANCE_S and not at_begin:
                    break  # landed after the window start: seek further back
            prev_t = t
            yield frame, t
        else:
            if not first:
                return  # decoded to the end of the stream
            if at_begin:
                raise VideoError(f"{name}: no decodable video frames")
        target, back = max(begin_s, target - back), back * 2


def _frame_end(frame: av.VideoFrame, t: float, tb: Fraction, default_dt: float) -> float:
    dur = frame.duration
    return t + (float(dur * tb) if dur else default_dt)


def read_frames(
    path: str | Path,
    start_s: float,
    end_s: float,
    fps: float = 30,
    video_stream: int | None = None,
    max_width: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield exactly round((end_s - start_s) * fps) upright RGB uint8 frames of the window.

    Frame k is the latest source frame shown at or before t_k = start_s + k/fps (the first frame
    when t_k precedes it). The window is decoded once from the keyframe before start_s; source
    frames that no output picks are never converted to RGB. ``max_width`` downscales in the
    decoder's colour conversion (detection runs faster on small frames). Raises VideoError, also
    mid-iteration when the window runs past the end of the video.
    """
    if max_width is not None and max_width < 1:
        raise VideoError(f"max_width must be >= 1, got {max_width}")
    return _as_rgb(read_video_frames(path, start_s, end_s, fps, video_stream), max_width)


def _as_rgb(frames: Iterator[av.VideoFrame], max_width: int | None) -> Iterator[np.ndarray]:
    # A held frame is converted again rather than copied from a cache: the cost is the same, and
    # callers may draw on what they receive.
    for frame in frames:
        yield _to_rgb(frame, max_width)


def read_video_frames(
    path: str | Path,
    start_s: float,
    end_s: float,
    fps: float = 30,
    video_stream: int | None = None,
    threads: int | None = None,
    source_index: list[int] | None = None,
) -> Iterator[av.VideoFrame]:
    """:func:`read_frames`' sample-and-hold, yielding the decoder's own frames (no conversion).

    ``threads`` caps the decoder's threads (None: FFmpeg's choice, one per core); a process pool
    that already keeps every core busy decodes cheaper with 1 (no frame-threading overhead).
    ``source_index``, when given, receives for every yielded frame the index of the source frame
    it shows, counted in decode order from the frame shown first (0): equal neighbours are holds
    (a 25 fps source at 30 FPS repeats every fifth frame), a step of 2 skips a source frame.

    A held frame is yielded again as the same object. Keeping these instead of RGB arrays halves
    the memory of a window (YUV 4:2:0) and lets callers convert only what they use: a small copy
    for detection, the crop region for the crop (see emokit.data.frames).
    """
    n = _window_frames(start_s, end_s, fps)
    name = Path(path).name
    container = _open(path)
    try:
        stream = _pick_stream(container, video_stream, name)
    except VideoError:
        container.close()
        raise
    return _sample_and_hold(container, stream, name, start_s, end_s, fps, n, threads, source_index)


def _sample_and_hold(
    container, stream, name, start_s, end_s, fps, n, threads, source_index=None
) -> Iterator[av.VideoFrame]:
    with container:
        stream.codec_context.thread_type = "AUTO" if threads != 1 else "NONE"
        if threads:
            stream.codec_context.thread_count = threads
        tb = stream.time_base
        default_dt = 1.0 / float(stream.average_rate or stream.guessed_rate or fps)
        held: av.VideoFrame | None = None
        held_t = 0.0
        k = 0
        decoded = held_i = first_i = -1  # decode-order counters: current, held, shown first
        try:
            for frame, t in _frames_from(container, stream, start_s, name):
                decoded += 1
                if held is None:  # the first frame also stands for any earlier output time
                    held, held_t, held_i = frame, t, decoded
                while k < n and t > start_s + k / fps + PTS_TOLERANCE_S:
                    if source_index is not None:
                        first_i = held_i if k == 0 else first_i
                        source_index.append(held_i - first_i)
                    yield held
                    k += 1
                if k >= n:
                    return
                held, held_t, held_i = frame, t, decoded
            if held is None:
                raise VideoError(f"{name}: no decodable video frames")
            video_end = _frame_end(held, held_t, tb, default_dt)
            while k < n:
                if start_s + k / fps >= video_end + PTS_TOLERANCE_S:
                    raise VideoError(
                        f"{name}: window {start_s:.3f}-{end_s:.3f} s runs past the end of the "
                        f"video ({video_end:.3f} s)"
                    )
                if source_index is not None:
                    first_i = held_i if k == 0 else first_i
                    source_index.append(held_i - first_i)
                yield held
                k += 1
        except av.FFmpegError as e:
            raise VideoError(f"{name}: cannot decode video ({error_text(e)})") from e
