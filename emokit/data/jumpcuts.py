"""Jump cuts: the same shot edited so the head suddenly jumps (position, zoom or rotation).

Content-based scene detectors miss them (same background, same person); EMO only absorbs them with
its speed layers. emokit finds them from the face track and head pose and splits the clip there.
A jump is a change between consecutive frames that is both large in absolute terms (relative to
the face size, or in degrees) and far above the clip's local motion, so a fast but continuous head
turn is not a cut.
"""

from __future__ import annotations

import numpy as np

from emokit.data.pose import relative_rotation_deg

# A step must also exceed this many times the median step of the frames around it.
_LOCAL_RATIO = 4.0
_LOCAL_WINDOW = 5  # frames on each side


def box_steps(boxes: np.ndarray) -> np.ndarray:
    """Per-frame box change from the previous frame, in units of the face size [F] (0 at frame 0).

    max(centre shift, size change) / geometric mean of the two box sides (sqrt of area).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    steps = np.zeros(len(b))
    if len(b) < 2:
        return steps
    side = np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
    centre = 0.5 * (b[:, :2] + b[:, 2:])
    ref = np.sqrt(side[1:] * side[:-1])
    shift = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    grow = np.abs(np.diff(side))
    with np.errstate(divide="ignore", invalid="ignore"):
        steps[1:] = np.where(ref > 0, np.maximum(shift, grow) / ref, np.inf)
    return steps


def _sudden(steps: np.ndarray, threshold: float) -> np.ndarray:
    """Frames whose step is above ``threshold`` and far above the local median step."""
    f = len(steps)
    out = np.zeros(f, dtype=bool)
    for t in np.flatnonzero(steps > threshold):
        lo, hi = max(1, t - _LOCAL_WINDOW), min(f, t + _LOCAL_WINDOW + 1)
        around = np.delete(steps[lo:hi], t - lo)
        around = around[np.isfinite(around)]
        local = np.median(around) if len(around) else 0.0
        out[t] = steps[t] > _LOCAL_RATIO * local
    return out


def find_jump_cuts(
    boxes: np.ndarray,
    rotations: np.ndarray | None = None,
    box_frac: float = 0.25,
    rotation_deg: float = 20.0,
) -> list[int]:
    """Frame indices t where frame t jumps from frame t-1 (the first frame of the new piece).

    ``boxes`` [F, 4] per-frame face boxes (any pixel units); ``rotations`` [F, 3] yaw, pitch, roll
    degrees or None. A jump: box step > ``box_frac`` face sizes, or head rotation step >
    ``rotation_deg``, and in either case > 4× the median step of the ±5 frames around it.
    Rows with NaN are ignored for the rotation test (missed pose).
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [F, 4], got shape {b.shape}")
    jump = _sudden(box_steps(b), box_frac)
    if rotations is not None:
        r = np.asarray(rotations, dtype=np.float64)
        if r.shape != (len(b), 3):
            raise ValueError(f"rotations must be [{len(b)}, 3], got shape {r.shape}")
        steps = np.zeros(len(r))
        if len(r) > 1:
            ok = np.isfinite(r).all(axis=1)
            pair = ok[1:] & ok[:-1]
            filled = np.where(ok[:, None], r, 0.0)
            steps[1:] = np.where(pair, relative_rotation_deg(filled), 0.0)
        jump |= _sudden(steps, rotation_deg)
    return np.flatnonzero(jump).tolist()
