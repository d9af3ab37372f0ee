"""Quality flags about the source itself, which the labels would otherwise hide.

``audio_short``: the source's audio ends before the clip does, so the rest of the clip's audio is
digital silence that load_audio padded in (a lip-sync model would learn closed mouths from speech).
``upscaled``: the crop was enlarged more than ``UPSCALE_FLAG`` times to the output size, so the
clip's detail is interpolated, not recorded (a 96 px source cropped to 512 px is 5.3x).
"""

from __future__ import annotations

import numpy as np

UPSCALE_FLAG = 2.0  # crop side x this < output size: flagged `upscaled`
SILENT_TAIL_S = 0.5  # exact zeros this long at the end of a clip's audio: flagged `audio_short`


def source_flags(
    crop_box: tuple[float, float, float, float] | list[float],
    size: int,
    audio: np.ndarray | None,
    span_s: tuple[float, float],
    sr: int,
) -> list[str]:
    """Flags for one clip: its crop box in source pixels, output ``size``, and the window's audio
    (``None`` without audio) of which the clip covers ``span_s`` seconds from the window start."""
    flags = []
    side = float(crop_box[2] - crop_box[0])
    if side > 0 and size / side > UPSCALE_FLAG:
        flags.append("upscaled")
    if audio is not None:
        part = audio[round(span_s[0] * sr) : round(span_s[1] * sr)]
        heard = np.flatnonzero(part)
        tail = len(part) - (heard[-1] + 1 if len(heard) else 0)
        if tail > SILENT_TAIL_S * sr:  # decoded audio is never exactly 0 this long; padding is
            flags.append("audio_short")
    return flags
