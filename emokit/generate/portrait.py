"""The portrait a video is generated from: any image Pillow reads → square face crop + face mask.

The crop is ``emokit label``'s, from the same code (emokit.data.crop): face box ×1.5 around its
centre, squared, shifted inside the image, then shrunk towards the face (down to
``MIN_CROP_SCALE`` × the face) before any padding, and padded ``"soft"`` (a blurred mirror, no
black border) where even that leaves the image — so the generator sees portraits framed like its
training clips, never the hard black borders training never shows it. Large
photos are decoded at reduced scale (JPEG DCT scaling via ``Image.draft``) twice: once small for
detection, once just large enough for the crop — a 3511 px photo never sits in memory at full size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emokit.data.crop import (
    LABEL_PAD,
    PADDED_FLAG,
    crop_square,
    fit_crop_box,
    padded_fraction,
    to_crop_coords,
)
from emokit.data.faces import FaceBox, FaceDetector

log = logging.getLogger(__name__)

ORIENTATION_TAG = 0x0112
DETECT_SIDE = 1024  # long side of the image detection runs on (MediaPipe sees far less anyway)


class PortraitError(ValueError):
    """The portrait cannot be used (unreadable image, no face); one-line reason."""


@dataclass(frozen=True)
class Portrait:
    """A framed portrait: the crop the model animates and the face region it may move."""

    image: np.ndarray  # [size, size, 3] uint8 RGB crop
    face_mask: np.ndarray  # [1, size, size] float32, 1 inside the face box
    face_box: FaceBox  # chosen face, in (EXIF-oriented) source pixels
    crop_box: tuple[float, float, float, float]  # square crop, source pixels (may pass the borders)
    source_size: tuple[int, int]  # (width, height) after EXIF orientation
    faces: int  # faces detected
    warnings: tuple[str, ...]
    padded_frac: float = 0.0  # share of the crop square outside the image (soft-padded), as label's

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.size  # noqa: B018 - header parsed; raises on garbage
        return img
    except FileNotFoundError:
        raise PortraitError(f"portrait not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise PortraitError(f"cannot read portrait {path}: {e}") from None


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """Full-size (width, height) as displayed: EXIF orientations 5–8 swap the axes."""
    w, h = img.size
    return (h, w) if img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8) else (w, h)


def _decode(path: Path, scale: float) -> np.ndarray:
    """Decode at ``scale`` (≤ 1) of full size or a little more, oriented, RGB uint8.

    JPEG decodes straight at 1/2, 1/4 or 1/8 (never smaller than asked); other formats decode
    fully and are reduced by an integer factor at once, before any float copy exists.
    """
    with _open(path) as img:
        full_w = img.size[0]
        try:
            if scale < 1.0:
                img.draft("RGB", (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale)))
            img.load()
            factor = int(img.size[0] / max(full_w * scale, 1))
            if factor >= 2:
                img = img.reduce(factor)
            rgb = _to_rgb(ImageOps.exif_transpose(img))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise PortraitError(f"cannot decode portrait {path}: {e}") from None
    return np.asarray(rgb)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB: alpha composited on white, greyscale / 16-bit / CMYK converted."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float32)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def _choose_face(faces: list[FaceBox], path: Path) -> tuple[FaceBox, list[str]]:
    if not faces:
        raise PortraitError(f"no face found in portrait {path}")
    warnings: list[str] = []
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found in {path.name}; using the largest")
    return faces[0], warnings


def _scaled(box: FaceBox, k: float) -> FaceBox:
    return FaceBox(box.x0 * k, box.y0 * k, box.x1 * k, box.y1 * k, box.score)


def load_portrait(
    path: str | Path,
    size: int = 512,
    crop_scale: float = 1.5,
    detect_width: int = 320,
    min_confidence: float = 0.5,
) -> Portrait:
    """Read, orient, detect the (largest) face, crop it square ×``crop_scale``, resize to ``size``.

    Raises ``PortraitError`` with one line when the image cannot be read or holds no face.
    """
    path = Path(path)
    if size < 8:
        raise PortraitError(f"size must be at least 8 px, got {size}")
    with _open(path) as img:
        full_w, full_h = _oriented_size(img)

    # Pass 1: a small decode for detection; boxes are mapped back to full-size pixels.
    small = _decode(path, min(1.0, DETECT_SIDE / max(full_w, full_h)))
    k_small = full_w / small.shape[1]
    with FaceDetector(min_confidence=min_confidence, detect_width=detect_width) as detector:
        faces = [_scaled(b, k_small) for b in detector(small)]
    face, warnings = _choose_face(faces, path)
    full_box = fit_crop_box(face.xyxy(), (full_w, full_h), crop_scale)
    crop_box = tuple(float(v) for v in full_box)
    side = float(full_box[2] - full_box[0])
    padded = padded_fraction(full_box, (full_w, full_h))

    # Pass 2: decode just large enough that the crop keeps at least ``size`` pixels of detail.
    need = min(1.0, size / side)
    pixels = small if small.shape[1] >= full_w * need else _decode(path, need)
    del small
    k = pixels.shape[1] / full_w
    face_px = _scaled(face, k)
    # the label rule, in the decoded pixels
    crop_px = fit_crop_box(face_px.xyxy(), (pixels.shape[1], pixels.shape[0]), crop_scale)
    image = crop_square(pixels, crop_px, size, LABEL_PAD)
    del pixels
    if side * k < size * 0.75:
        warnings.append(
            f"face crop is only {side * k:.0f} px wide, upscaled to {size} px; output will be soft"
        )

    if padded > PADDED_FLAG:
        warnings.append(
            f"the face is close to the image edge: {padded:.0%} of the crop lies outside the picture"
            " (filled with a blurred mirror)"
        )

    x0, y0, x1, y1 = (float(v) for v in to_crop_coords(face_px.xyxy(), crop_px, size))
    mask = np.zeros((1, size, size), np.float32)
    r0, r1 = max(0, math.floor(y0)), min(size, math.ceil(y1))
    c0, c1 = max(0, math.floor(x0)), min(size, math.ceil(x1))
    mask[:, r0:r1, c0:c1] = 1.0
    for w in warnings:
        log.warning(w)
    return Portrait(
        image=np.ascontiguousarray(image, dtype=np.uint8),
        face_mask=mask,
        face_box=face,
        crop_box=crop_box,  # type: ignore[arg-type]
        source_size=(full_w, full_h),
        faces=len(faces),
        warnings=tuple(warnings),
        padded_frac=padded,
    )
