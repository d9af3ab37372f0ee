"""A decoded window kept as YUV 4:2:0 planes in reusable memory, converting only what label uses.

A 10 s 1080×1920 window is 300 frames: 1.9 GB as RGB but 0.9 GB as the decoder's YUV 4:2:0, and
converting every full frame to RGB cost more than decoding it. Face detection needs a small RGB
copy (scaled inside swscale, as each frame arrives) and the crop needs RGB of the crop region only,
converted from the YUV planes of that region.

The planes are copied out of the decoder's frames into one buffer per process that every window
reuses (:func:`reusable`). Holding the decoder's own frames instead made FFmpeg allocate fresh
buffers for every frame, and the kernel zeroing those new pages (page faults) cost ~15 % of
label's CPU; a copy is ~0.3 ms per 1080×1920 frame and the reused memory faults only once.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from emokit.data.crop import LABEL_PAD, PadMode, crop_square
from emokit.data.decode import _orientation, _to_rgb

_POOL: dict[str, np.ndarray] = {}


def _private_map(n: int) -> mmap.mmap:
    return mmap.mmap(-1, max(n, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def reusable(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array of ``shape`` backed by this process's buffer ``name``, grown when too small.

    Contents are whatever the last user left; the next call with the same name hands out the same
    memory, so callers must not keep the array past their window. The buffer is a plain anonymous
    mapping: numpy's own large allocations ask for transparent huge pages, and first touching
    1 GiB of those took 2.0 s of kernel time here against 0.35 s with normal pages.
    """
    n = int(np.prod(shape))
    buf = _POOL.get(name)
    if buf is None or buf.size < n:
        _POOL.pop(name, None)  # drop the old buffer before mapping a bigger one
        _POOL[name] = buf = np.frombuffer(_private_map(n), np.uint8)
    return buf[:n].reshape(shape)


def _plane(frame: av.VideoFrame, i: int) -> np.ndarray:
    p = frame.planes[i]
    return np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def _i420_region_rgb(planes: Sequence[np.ndarray], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """RGB of [y0:y1, x0:x1] (even coordinates) from Y, U, V planes, via OpenCV's I420 path."""
    y = planes[0][y0:y1, x0:x1]
    u = planes[1][y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    v = planes[2][y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    rows = y1 - y0
    pad = (-rows) % 4  # OpenCV's packed I420 needs the chroma planes to fill whole rows
    if pad:
        y = np.pad(y, ((0, pad), (0, 0)), mode="edge")
        u = np.pad(u, ((0, pad // 2), (0, 0)), mode="edge")
        v = np.pad(v, ((0, pad // 2), (0, 0)), mode="edge")
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, x1 - x0)
    return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)[:rows]


def _i420_small_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A bilinear ``width``×``height`` (both even) RGB copy of a yuv420p frame, from its planes.

    Why not swscale: its scaled yuv420p → rgb24 took ~1.8 ms per 1080×1920 frame here, OpenCV's
    bilinear resize of the three planes and one I420 conversion at the small size ~0.5–0.9 ms
    (the detection copy of every frame; crops use the same I420 conversion).
    """
    planes = [_plane(frame, k) for k in range(3)]
    y = cv2.resize(planes[0], (width, height), interpolation=cv2.INTER_LINEAR)
    u = cv2.resize(planes[1], (width // 2, height // 2), interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(planes[2], (width // 2, height // 2), interpolation=cv2.INTER_LINEAR)
    packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, width)
    return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)


class WindowFrames:
    """A window's frames at the output rate; a held frame repeats without another copy.

    ``capacity`` is the most frames the window will hold (its output frame count). Frames are
    kept whole until :meth:`keep` names the part of the frame worth keeping (label keeps a
    generous square around the first face: ~3× less memory to touch on a 1080×1920 talking
    head); :meth:`covers` tells whether a crop box lies inside what was kept.
    """

    def __init__(self, first: av.VideoFrame, capacity: int) -> None:
        # The YUV path covers upright limited-range 8-bit 4:2:0, nearly all real footage;
        # anything else (rotation metadata, full range, 10 bit) keeps the decoder's frames and
        # converts a whole frame to upright RGB per crop (RGB would hold twice the memory).
        self._fast = first.format.name == "yuv420p" and not any(_orientation(first))
        self._scaler = VideoReformatter()  # one swscale context reused for every frame
        self._capacity = capacity
        self._region: tuple[int, int, int, int] | None = None  # kept part, even-aligned
        self._pending: list[av.VideoFrame] = []  # frames that arrived before keep()
        if self._fast:
            self.height, self.width = first.height, first.width
        else:
            self.height, self.width = _to_rgb(first, None).shape[:2]
            self._kept: list[av.VideoFrame] = []
        self._slots: list[int] = []  # output frame → stored frame
        # Output frame → source frame index in decode order (read_video_frames' source_index),
        # filled by the caller that decodes; label stores it per clip frame.
        self.source_index: list[int] = []
        self._stored = 0
        self._last: av.VideoFrame | None = None

    def keep(self, box: Sequence[float] | None) -> None:
        """Keep only ``box`` (x0, y0, x1, y1 in frame pixels; None = the whole frame) of every
        frame, from the frames already added on. Call once."""
        if not self._fast or self._region is not None:
            return
        w, h = self.width & ~1, self.height & ~1
        if box is None:
            region = (0, 0, w, h)
        else:
            x0, y0, x1, y1 = (
                int(np.floor(box[0])),
                int(np.floor(box[1])),
                int(np.ceil(box[2])),
                int(np.ceil(box[3])),
            )
            region = (max(0, x0) & ~1, max(0, y0) & ~1, min(w, x1 + (x1 & 1)), min(h, y1 + (y1 & 1)))
        rx0, ry0, rx1, ry1 = region
        if rx1 - rx0 < 2 or ry1 - ry0 < 2:
            rx0, ry0, rx1, ry1 = region = (0, 0, w, h)
        shapes = [(ry1 - ry0, rx1 - rx0), ((ry1 - ry0) // 2, (rx1 - rx0) // 2)]
        self._store = [reusable(f"plane{k}", (self._capacity, *shapes[min(k, 1)])) for k in range(3)]
        self._region = region
        pending, self._pending = self._pending, []
        for slot, frame in enumerate(pending):
            self._copy(frame, slot)

    def _copy(self, frame: av.VideoFrame, slot: int) -> None:
        assert self._region is not None  # keep() sets it before any copy
        rx0, ry0, rx1, ry1 = self._region
        for k, store in enumerate(self._store):
            d = 1 if k == 0 else 2
            np.copyto(store[slot], _plane(frame, k)[ry0 // d : ry1 // d, rx0 // d : rx1 // d])

    def add(self, frame: av.VideoFrame) -> None:
        """Append the next output frame (the same object as the previous one = a held frame)."""
        if frame is self._last:
            self._slots.append(self._slots[-1])
            return
        self._last = frame
        if not self._fast:
            self._kept.append(frame)
        elif self._region is None:
            self._pending.append(frame)
        else:
            self._copy(frame, self._stored)
        self._slots.append(self._stored)
        self._stored += 1

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def small(self, frame: av.VideoFrame, width: int, interpolation: str = "FAST_BILINEAR") -> np.ndarray:
        """``frame`` (one of this window's, as it arrives) as upright RGB at most ``width`` wide.

        The aspect ratio is kept to within a row: the bilinear copy (face detection's) has an even
        height, so map back with the factors of the returned shape, not of the width alone.
        """
        if not self._fast or self.width <= width:
            return np.ascontiguousarray(_to_rgb(frame, width if self.width > width else None))
        if interpolation == "FAST_BILINEAR":
            return _i420_small_rgb(frame, width & ~1, 2 * max(1, round(self.height * width / self.width / 2)))
        height = max(2, round(self.height * width / self.width))
        small = self._scaler.reformat(
            frame, width=width, height=height, format="rgb24", interpolation=interpolation
        )
        return np.ascontiguousarray(small.to_ndarray())

    def _source_rect(self, crop_box: Sequence[int]):
        """The crop box's pixels inside the frame, and that rectangle grown to even edges."""
        x0, y0, x1, y1 = (int(round(v)) for v in crop_box)
        w, h = self.width & ~1, self.height & ~1
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        aligned = (sx0 & ~1, sy0 & ~1, min(w, sx1 + (sx1 & 1)), min(h, sy1 + (sy1 & 1)))
        return (x0, y0, x1, y1), (sx0, sy0, sx1, sy1), aligned

    def covers(self, crop_box: Sequence[int]) -> bool:
        """Whether :meth:`crop` can cut ``crop_box`` from what :meth:`keep` kept."""
        if not self._fast or self._region is None:
            return True
        _, (sx0, sy0, sx1, sy1), (ax0, ay0, ax1, ay1) = self._source_rect(crop_box)
        if sx1 <= sx0 or sy1 <= sy0:
            return True  # all padding
        rx0, ry0, rx1, ry1 = self._region
        return rx0 <= ax0 and ry0 <= ay0 and ax1 <= rx1 and ay1 <= ry1

    def crop(self, i: int, crop_box: Sequence[int], size: int, pad: PadMode = LABEL_PAD) -> np.ndarray:
        """The square ``crop_box`` (source pixels, may leave the frame: padded as ``pad``, label's
        blurred mirror by default) of output frame ``i`` at ``size``², as
        :func:`emokit.data.crop.crop_square` gives from full RGB."""
        slot = self._slots[i]
        if not self._fast:
            return crop_square(_to_rgb(self._kept[slot], None), crop_box, size, pad)
        if self._region is None:
            self.keep(None)
        if not self.covers(crop_box):
            raise ValueError(f"crop box {tuple(crop_box)} leaves the kept region {self._region}")
        (x0, y0, x1, y1), (sx0, sy0, sx1, sy1), (ax0, ay0, ax1, ay1) = self._source_rect(crop_box)
        if sx1 <= sx0 or sy1 <= sy0:
            return np.zeros((size, size, 3), np.uint8)
        assert self._region is not None  # set by keep() above
        rx0, ry0 = self._region[:2]
        planes = [s[slot] for s in self._store]
        region = _i420_region_rgb(planes, ax0 - rx0, ay0 - ry0, ax1 - rx0, ay1 - ry0)
        region = region[sy0 - ay0 : sy1 - ay0, sx0 - ax0 : sx1 - ax0]
        return crop_square(region, (x0 - sx0, y0 - sy0, x1 - sx0, y1 - sy0), size, pad)
