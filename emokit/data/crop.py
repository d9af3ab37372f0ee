"""Square face crops: one fixed box per clip, so the camera stays still inside the clip (EMO).

The clip's crop is the union of its per-frame face boxes, expanded ×``scale`` (1.5) around its
centre and made square. Crop boxes are whole pixels, so cropping and the box arithmetic agree
exactly; where the square reaches past the frame the missing pixels are padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

CropBox = tuple[int, int, int, int]
PadMode = Literal["zero", "edge"]


class CropError(ValueError):
    """Bad crop arguments (one-line reason)."""


def _xyxy(box: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in list(box)[:4])
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        raise CropError(f"not a box with positive size: {(x0, y0, x1, y1)}")
    return x0, y0, x1, y1


def square_crop_box(
    box: Sequence[float] | np.ndarray,
    scale: float = 1.5,
    frame_size: tuple[int, int] | None = None,
) -> CropBox:
    """Whole-pixel square of side ``scale`` × the box's longer side, centred on the box.

    It may reach past the frame borders (``crop_square`` pads). With ``frame_size=(w, h)`` the
    square is shifted (never shrunk) to lie inside the frame when it fits, which keeps real pixels
    instead of padding while the face stays inside (the box lies inside the frame).
    """
    if scale <= 0:
        raise CropError(f"scale must be positive, got {scale}")
    x0, y0, x1, y1 = _xyxy(box)
    side = max(1, round(scale * max(x1 - x0, y1 - y0)))
    left = round(0.5 * (x0 + x1) - side / 2)
    top = round(0.5 * (y0 + y1) - side / 2)
    if frame_size is not None:
        w, h = frame_size
        if side <= w:
            left = min(max(left, 0), w - side)
        if side <= h:
            top = min(max(top, 0), h - side)
    return (int(left), int(top), int(left + side), int(top + side))


def union_box(boxes: np.ndarray) -> tuple[float, float, float, float]:
    """The smallest box holding every (finite) box in ``boxes`` [F, 4]."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) == 0:
        raise CropError("no boxes to take the union of")
    return (arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max())


def clip_crop_box(
    boxes: np.ndarray, scale: float = 1.5, frame_size: tuple[int, int] | None = None
) -> CropBox:
    """The clip's crop: union box of the track, ×``scale`` around its centre, squared."""
    return square_crop_box(union_box(boxes), scale, frame_size)


def crop_square(frame: np.ndarray, crop_box: Sequence[int], size: int, pad: PadMode = "zero") -> np.ndarray:
    """The ``crop_box`` region of ``frame`` resized to ``size``×``size`` (padding outside the frame).

    Downscaling averages areas (no aliasing on 1080p sources); upscaling is bicubic.
    """
    if size < 1:
        raise CropError(f"size must be >= 1, got {size}")
    if pad not in ("zero", "edge"):
        raise CropError(f"pad must be 'zero' or 'edge', got {pad!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in crop_box)
    side = x1 - x0
    if side < 1 or y1 - y0 != side:
        raise CropError(f"crop box is not a non-empty square: {tuple(crop_box)}")
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 <= sx0 or sy1 <= sy0:
        if pad == "edge":
            raise CropError(f"crop box {tuple(crop_box)} lies outside the {w}x{h} frame")
        region = np.zeros((side, side) + frame.shape[2:], dtype=frame.dtype)
    else:
        region = frame[sy0:sy1, sx0:sx1]
        borders = (sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1)  # top, bottom, left, right
        if any(borders):
            mode = cv2.BORDER_CONSTANT if pad == "zero" else cv2.BORDER_REPLICATE
            top, bottom, left, right = borders
            region = cv2.copyMakeBorder(
                np.ascontiguousarray(region), top, bottom, left, right, mode, value=(0, 0, 0, 0)
            )
    if side == size:
        return np.ascontiguousarray(region)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interp)


def to_crop_coords(box: Sequence[float] | np.ndarray, crop_box: Sequence[int], size: int) -> np.ndarray:
    """Source-pixel boxes [..., 4] (x0, y0, x1, y1) in the pixels of the ``size``² crop."""
    x0, y0, x1, _ = (float(v) for v in crop_box)
    k = size / (x1 - x0)
    arr = np.asarray(box, dtype=np.float64)[..., :4]
    offset = np.array([x0, y0, x0, y0])
    return (arr - offset) * k
