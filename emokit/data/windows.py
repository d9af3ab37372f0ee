"""Scene spans → clip windows of min..max seconds (EMO: 3–12 s), snapped to real frames."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    scene_index: int
    window_index: int
    start_frame: int  # inclusive
    end_frame: int  # exclusive
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def scene_spans(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """Frame ranges [start, end) between consecutive cuts."""
    bounds = [0, *[c for c in sorted(set(cuts)) if 0 < c < num_frames], num_frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _time(frame_times: np.ndarray, end_s: float, index: int) -> float:
    return float(frame_times[index]) if index < len(frame_times) else end_s


def split_span(
    frame_times: np.ndarray, end_s: float, start: int, end: int, min_s: float, max_s: float
) -> list[tuple[int, int]]:
    """Divide frames [start, end) into near-equal parts each within [min_s, max_s] seconds.

    A span shorter than ``min_s`` gives nothing. Boundaries land on the frame nearest each equal
    division in time, so VFR spans are divided by time, not by frame count.
    """
    t0, t1 = _time(frame_times, end_s, start), _time(frame_times, end_s, end)
    duration = t1 - t0
    if duration < min_s:
        return []
    n = max(1, math.ceil(duration / max_s))
    while True:
        targets = [t0 + duration * k / n for k in range(1, n)]
        inner = [int(np.argmin(np.abs(frame_times[start:end] - t))) + start for t in targets]
        edges = [start, *inner, end]
        lengths = [
            _time(frame_times, end_s, b) - _time(frame_times, end_s, a) for a, b in zip(edges, edges[1:])
        ]
        if max(lengths) <= max_s + 1e-9 or n > len(range(start, end)):
            break
        n += 1  # snapping pushed a part past the bound: divide once more
    return [(a, b) for a, b, d in zip(edges, edges[1:], lengths) if min_s - 1e-9 <= d]


def clip_windows(
    frame_times: np.ndarray, end_s: float, cuts: list[int], min_s: float, max_s: float
) -> list[Window]:
    """All clip windows of a video, scene by scene."""
    out: list[Window] = []
    for si, (a, b) in enumerate(scene_spans(len(frame_times), cuts)):
        for wi, (s, e) in enumerate(split_span(frame_times, end_s, a, b, min_s, max_s)):
            out.append(Window(si, wi, s, e, _time(frame_times, end_s, s), _time(frame_times, end_s, e)))
    return out


def frame_windows(
    num_frames: int, fps: float, cuts: list[int], min_s: float, max_s: float
) -> list[tuple[int, int]]:
    """:func:`clip_windows` for constant-rate frames (label's 30 FPS clips): (start, end) pairs."""
    if fps <= 0 or min_s <= 0 or max_s < min_s:
        raise ValueError(f"need fps > 0 and 0 < min_s <= max_s, got {fps}, {min_s}, {max_s}")
    times = np.arange(num_frames) / fps
    return [(w.start_frame, w.end_frame) for w in clip_windows(times, num_frames / fps, cuts, min_s, max_s)]
