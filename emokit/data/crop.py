"""Square face crops: one fixed box per clip, so the camera stays still inside the clip (EMO).

The clip's crop is the union of its per-frame face boxes, expanded ×``scale`` (1.5) around its
centre and made square. Crop boxes are whole pixels, so cropping and the box arithmetic agree
exactly.

Crops stay in the picture (:func:`fit_crop_box`): a square that leaves the frame is first shifted
inside, then, when the frame is too small for it, shrunk towards the face down to
``MIN_CROP_SCALE`` (1.15) × the face box's long side. The face box always keeps that minimum
margin: a square of 1.15 × its long side, centred on it, lies inside the crop (7.5 % of a face
side on each side of the long axis), room for the chin and forehead the detector's tight box
leaves out. Only when that minimum square itself leaves the frame (the face is closer than 7.5 %
of its side to an edge, or the frame is shorter than 1.15 face sides; a face cut by the edge is
rejected earlier, by the tracker) is the crop padded. :func:`padded_fraction` is the share of the
crop square outside the frame; label stores it (``padded_frac``) and flags ``padded`` above
``PADDED_FLAG`` = 5 %: a soft-padded sliver is harmless (2.2 % for the shirt below the face of the
shared 410×412 interview, speaker_d, where the old ×1.5 rule padded 16.9 % black).

Padding is ``"soft"`` for label: the missing pixels mirror the picture at the frame edge
(reflect-101, no repeated edge row) and fade, with the distance from the edge, into a strongly
blurred copy. Zeros would teach the model hard black borders and edge replication teaches
streaks; a blurred mirror keeps the colours and light of the scene without sharp structure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

CropBox = tuple[int, int, int, int]
PadMode = Literal["zero", "edge", "soft"]

MIN_CROP_SCALE = 1.15  # the smallest crop side, in face box long sides, before padding
PADDED_FLAG = 0.05  # label flags ``padded`` above this fraction of the crop outside the frame
LABEL_PAD: PadMode = "soft"


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


def fit_crop_box(
    box: Sequence[float] | np.ndarray,
    frame_size: tuple[int, int],
    scale: float = 1.5,
    min_scale: float = MIN_CROP_SCALE,
) -> CropBox:
    """Whole-pixel square around ``box`` that stays inside the ``(w, h)`` frame where it can.

    Side: ``scale`` × the box's long side, shrunk to the frame's short side when larger, but
    never below ``min_scale`` × the long side. Position: centred on the box, shifted to lie
    inside the frame (or, when wider than the frame, to cover it), and always holding the
    ``min_scale`` square centred on the box, which is what decides where padding is unavoidable.
    """
    if not 1.0 <= min_scale <= scale:
        raise CropError(f"need 1 <= min_scale <= scale, got min_scale {min_scale}, scale {scale}")
    x0, y0, x1, y1 = _xyxy(box)
    w, h = frame_size
    if w < 1 or h < 1:
        raise CropError(f"frame size must be positive, got {frame_size}")
    long_side = max(x1 - x0, y1 - y0)
    min_side = max(1, math.ceil(min_scale * long_side))
    side = max(min_side, min(round(scale * long_side), min(w, h)))
    corner = []
    for c, extent in ((0.5 * (x0 + x1), w), (0.5 * (y0 + y1), h)):
        inner = round(c - min_side / 2)  # the minimum-margin square, which the crop must hold
        start = round(c - side / 2)
        start = min(max(start, min(0, extent - side)), max(0, extent - side))  # into the frame
        corner.append(int(min(max(start, inner + min_side - side), inner)))
    left, top = corner
    return (left, top, left + side, top + side)


def padded_fraction(crop_box: Sequence[int], frame_size: tuple[int, int]) -> float:
    """The share of the crop square's area that lies outside the ``(w, h)`` frame (0 = none)."""
    x0, y0, x1, y1 = (int(round(v)) for v in crop_box)
    w, h = frame_size
    inside = max(0, min(x1, w) - max(x0, 0)) * max(0, min(y1, h) - max(y0, 0))
    return 1.0 - inside / ((x1 - x0) * (y1 - y0))


def clip_crop_box(
    boxes: np.ndarray,
    scale: float = 1.5,
    frame_size: tuple[int, int] | None = None,
    min_scale: float = MIN_CROP_SCALE,
) -> CropBox:
    """The clip's crop: union box of the track, ×``scale`` around its centre, squared; with
    ``frame_size``, kept inside the frame as :func:`fit_crop_box` does."""
    union = union_box(boxes)
    if frame_size is None:
        return square_crop_box(union, scale)
    return fit_crop_box(union, frame_size, scale, min_scale)


def crop_square(frame: np.ndarray, crop_box: Sequence[int], size: int, pad: PadMode = "zero") -> np.ndarray:
    """The ``crop_box`` region of ``frame`` resized to ``size``×``size`` (padding outside the frame:
    ``"zero"`` black, ``"edge"`` repeated edge pixels, ``"soft"`` blurred mirror, see the module).

    Downscaling averages areas (no aliasing on 1080p sources); upscaling is bicubic.
    """
    if size < 1:
        raise CropError(f"size must be >= 1, got {size}")
    if pad not in ("zero", "edge", "soft"):
        raise CropError(f"pad must be 'zero', 'edge' or 'soft', got {pad!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in crop_box)
    side = x1 - x0
    if side < 1 or y1 - y0 != side:
        raise CropError(f"crop box is not a non-empty square: {tuple(crop_box)}")
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 <= sx0 or sy1 <= sy0:
        if pad != "zero":
            raise CropError(f"crop box {tuple(crop_box)} lies outside the {w}x{h} frame")
        return np.zeros((size, size) + frame.shape[2:], dtype=frame.dtype)
    region = frame[sy0:sy1, sx0:sx1]
    borders = (sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1)  # top, bottom, left, right
    if pad == "soft" and any(borders):
        return _soft_pad(region, borders, side, size)
    if any(borders):
        mode = cv2.BORDER_CONSTANT if pad == "zero" else cv2.BORDER_REPLICATE
        top, bottom, left, right = borders
        region = cv2.copyMakeBorder(
            np.ascontiguousarray(region), top, bottom, left, right, mode, value=(0, 0, 0, 0)
        )
    return _resize(region, size, size)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interp)


def _soft_pad(region: np.ndarray, borders: tuple[int, int, int, int], side: int, size: int) -> np.ndarray:
    """``region`` (the in-frame part) padded by ``borders`` source pixels, at ``size``² output.

    Works at the output size (the in-frame part is resized first, so a 1080p crop pays for a
    512² blur, not a 1000² one). The mirror fades over ``size / 16`` pixels into a blur of
    ~``size / 12`` pixels (box-downscaled by 16, Gaussian, upscaled); blur and blend cost a few ms
    at 512² (benchmarks/bench_crop_pad.py), on top of the resize every crop pays.
    """
    k = size / side
    top, bottom, left, right = (round(b * k) for b in borders)
    inner_w, inner_h = max(1, size - left - right), max(1, size - top - bottom)
    left, top = min(left, size - inner_w), min(top, size - inner_h)
    right, bottom = size - inner_w - left, size - inner_h - top
    inner = _resize(region, inner_w, inner_h)
    mirrored = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    small = max(2, size // 16)
    blurred = cv2.resize(mirrored, (small, small), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(blurred, (0, 0), sigmaX=1.0)
    blurred = cv2.resize(blurred, (size, size), interpolation=cv2.INTER_LINEAR)
    # blend weight: distance outside the picture (px, the larger of the two axes) / ramp, ≤ 1,
    # in float32 and only over the padded bands (the whole square cost ~10× more here)
    idx = np.arange(size, dtype=np.float32)
    ramp = np.float32(max(2.0, size / 16))
    dx = np.maximum(np.maximum(left - idx, idx - (left + inner_w - 1)), 0) / ramp
    dy = np.maximum(np.maximum(top - idx, idx - (top + inner_h - 1)), 0) / ramp
    middle = slice(top, size - bottom)
    bands = [(slice(0, top), slice(None)), (slice(size - bottom, size), slice(None))]
    bands += [(middle, slice(0, left)), (middle, slice(size - right, size))]
    for rows, cols in bands:
        w = np.minimum(np.maximum(dy[rows, None], dx[None, cols]), np.float32(1.0))
        if w.size:
            m, b = np.ascontiguousarray(mirrored[rows, cols]), np.ascontiguousarray(blurred[rows, cols])
            mirrored[rows, cols] = cv2.blendLinear(m, b, np.float32(1.0) - w, w)
    return mirrored


def to_crop_coords(box: Sequence[float] | np.ndarray, crop_box: Sequence[int], size: int) -> np.ndarray:
    """Source-pixel boxes [..., 4] (x0, y0, x1, y1) in the pixels of the ``size``² crop."""
    x0, y0, x1, _ = (float(v) for v in crop_box)
    k = size / (x1 - x0)
    arr = np.asarray(box, dtype=np.float64)[..., :4]
    offset = np.array([x0, y0, x0, y0])
    return (arr - offset) * k
