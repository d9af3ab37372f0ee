"""Still clips: how much of a clip's face crop never changes (a photo, a frozen stream, a slideshow).

EMO learns motion from its clips; a clip whose face is a still picture (a panel showing a photo
while someone else speaks, a stream that froze) teaches "talking without moving". Such clips look
normal to every other label: a face, one track, no cut.

A source frame is *held* when its crop differs from the previous source frame's crop by at most
``HELD_LEVEL`` grey levels anywhere on a 64² grey thumbnail (max absolute difference, after the
area downscale that averages compression noise away; a blink or a moving lip changes some pixels
by far more). Sample-and-hold repeats of a slower source (30 FPS frames showing the same source
frame, ``source_frame`` in the shard) are not frames of their own: they are skipped, so a 25 fps
talking head has ``held_frac`` ≈ 0, not 1/6. ``held_frac`` = held source frames / source frames
after the first (1.0 when the clip shows a single source frame); ``static`` flags
``held_frac >= STATIC_FRAC``.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = 64
# Grey levels (0..255) on the thumbnail. Measured (BENCHMARKS.md, "Still clips"): consecutive source
# frames of the shared talking videos differ by at least 2-21 levels somewhere (median 20-118), a
# real frame held as an H.264 picture (crf 18 and 28) by exactly 0.
HELD_LEVEL = 2.0
STATIC_FRAC = 0.8

__all__ = ["HELD_LEVEL", "STATIC_FRAC", "HeldFrames"]


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """The crop as a THUMB² grey float32 image (area-averaged)."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class HeldFrames:
    """Accumulates a clip's crops with their source frame indices; ``fraction`` = held_frac."""

    def __init__(self, level: float = HELD_LEVEL) -> None:
        self.level = level
        self.held = 0
        self.frames = 0  # source frames after the first
        self._prev: np.ndarray | None = None
        self._prev_source: int | None = None

    def add(self, crop: np.ndarray, source: int) -> None:
        """Add the next 30 FPS crop and the index of the source frame it shows."""
        if source == self._prev_source:
            return  # a sample-and-hold repeat, not a frame of the source
        thumb = thumbnail(crop)
        if self._prev is not None:
            self.frames += 1
            self.held += bool(np.abs(thumb - self._prev).max() <= self.level)
        self._prev, self._prev_source = thumb, source

    @property
    def fraction(self) -> float:
        return self.held / self.frames if self.frames else 1.0
