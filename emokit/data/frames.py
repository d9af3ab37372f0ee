"""A decoded window kept as the decoder's own frames, converting only what label uses.

A 10 s 1080×1920 window is 300 frames: 1.9 GB as RGB but 0.9 GB as the decoder's YUV 4:2:0, and
converting every full frame to RGB cost more than decoding it. Face detection needs a small RGB
copy (scaled inside swscale) and the crop needs RGB of the crop region only, converted from the
YUV planes of that region.
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import cv2
from av.video.reformatter import VideoReformatter
import numpy as np

from emokit.data.crop import crop_square
from emokit.data.decode import _orientation, _to_rgb


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def _i420_region_rgb(frame: av.VideoFrame, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """RGB of [y0:y1, x0:x1] (even coordinates) from a yuv420p frame, via OpenCV's I420 path."""
    y = _plane(frame, 0)[y0:y1, x0:x1]
    u = _plane(frame, 1)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    v = _plane(frame, 2)[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    rows = y1 - y0
    pad = (-rows) % 4  # OpenCV's packed I420 needs the chroma planes to fill whole rows
    if pad:
        y = np.pad(y, ((0, pad), (0, 0)), mode="edge")
        u = np.pad(u, ((0, pad // 2), (0, 0)), mode="edge")
        v = np.pad(v, ((0, pad // 2), (0, 0)), mode="edge")
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, x1 - x0)
    return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)[:rows]


class WindowFrames:
    """A window's frames at the output rate (held frames repeat as the same object)."""

    def __init__(self, frames: Sequence[av.VideoFrame]) -> None:
        if not frames:
            raise ValueError("a window needs at least one frame")
        self.frames = list(frames)
        first = self.frames[0]
        # The YUV fast path covers upright limited-range 8-bit 4:2:0, nearly all real footage;
        # anything else (rotation metadata, full range, 10 bit) converts through swscale.
        self._fast = first.format.name == "yuv420p" and not any(_orientation(first))
        self._scaler = VideoReformatter()  # one swscale context reused for every frame
        upright = _to_rgb(first, None).shape if not self._fast else (first.height, first.width)
        self.height, self.width = upright[0], upright[1]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def small(self, i: int, width: int, interpolation: str = "FAST_BILINEAR") -> np.ndarray:
        """Frame ``i`` as RGB at most ``width`` wide (scaled while converting)."""
        frame = self.frames[i]
        if not self._fast or self.width <= width:
            rgb = _to_rgb(frame, width if self.width > width else None)
            return np.ascontiguousarray(rgb)
        height = max(2, round(self.height * width / self.width))
        small = self._scaler.reformat(frame, width=width, height=height, format="rgb24",
                                      interpolation=interpolation)
        return np.ascontiguousarray(small.to_ndarray())

    def crop(self, i: int, crop_box: Sequence[int], size: int) -> np.ndarray:
        """The square ``crop_box`` (source pixels, may leave the frame: zero padding) of frame
        ``i`` at ``size``², as :func:`emokit.data.crop.crop_square` gives from a full RGB frame."""
        frame = self.frames[i]
        if not self._fast:
            return crop_square(_to_rgb(frame, None), crop_box, size)
        x0, y0, x1, y1 = (int(round(v)) for v in crop_box)
        w, h = self.width & ~1, self.height & ~1
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 <= sx0 or sy1 <= sy0:
            return np.zeros((size, size, 3), np.uint8)
        ax0, ay0 = sx0 & ~1, sy0 & ~1
        ax1, ay1 = min(w, sx1 + (sx1 & 1)), min(h, sy1 + (sy1 & 1))
        region = _i420_region_rgb(frame, ax0, ay0, ax1, ay1)
        region = region[sy0 - ay0 : sy1 - ay0, sx0 - ax0 : sx1 - ax0]
        return crop_square(region, (x0 - sx0, y0 - sy0, x1 - sx0, y1 - sy0), size)
