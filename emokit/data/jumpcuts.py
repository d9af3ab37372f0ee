"""Jump cuts: the same shot edited so the face suddenly jumps (position, zoom, pose, expression).

Content-based scene detectors miss them (same background, same person); EMO only absorbs them with
its speed layers. emokit finds them from what a cut does to the face, relative to the clip's own
recent motion, and splits the clip there. This module is the one definition of a jump cut.

Per frame: the face box and a "look" — a 32×32 grey thumbnail of the clip's fixed crop (cheap,
and deterministic per frame: it only depends on that frame's pixels and the clip's crop box).
Frames that repeat the previous image exactly (sample-and-hold of a 25 fps or VFR source onto
30 FPS) are set aside first: they are not motion, and their zero steps would drag every local
statistic down. On the remaining frames, the step of frame t (distance of its unit-normalised
look from the previous one) is a cut when it is, at once,

- far above the median step of the ±12 frames around it (``local``: sudden for this clip),
- far above both neighbouring steps (``spike``: one step, not a fast but continuous turn),
- still far from the frame before when frame t is skipped (``skip``: frame t-1 and t+1 differ
  too, so it is not one glitched or blurred frame, whose two steps cancel),

with the face box's own sudden step (against its local median) adding evidence. The score is the
smallest of those margins (log ratios minus their thresholds) plus the box term; a cut has a score
above ``JUMP_THRESHOLD``. Thresholds were chosen on ``benchmarks/bench_jumpcuts.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LOOK_SIDE = 32  # thumbnail side in pixels
_WINDOW = 12  # distinct frames on each side for the local median step
# Log-ratio thresholds of the three look tests and the weight of the box's sudden step.
_LOCAL = 1.0
_SPIKE = 0.9
_SKIP = 0.2
_BOX_WEIGHT = 0.25
_BOX_FLOOR = 1e-3  # face sizes: box steps below this are detector rounding, not motion
# Look steps below this are encoder noise, not motion: a still picture re-encoded as H.264 steps by
# <= 0.0015 (its keyframes stand out against a near-zero median), real talking heads by >= ~0.012
# (1st percentile on speaker_c/d, head_turn). Floored steps and medians keep stills from cutting.
_LOOK_FLOOR = 5e-3
# Score above which a frame is a cut: just above the highest score of any frame of the continuous
# shared videos (0.76), bar one frame of speaker_b that looks like a real jump cut (BENCHMARKS.md).
JUMP_THRESHOLD = 0.9


def crop_look(crop: np.ndarray) -> np.ndarray:
    """A frame's appearance for jump cuts: the crop as a 32×32 grey uint8 thumbnail (area mean)."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    return cv2.resize(grey, (LOOK_SIDE, LOOK_SIDE), interpolation=cv2.INTER_AREA)


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


def _local_median(v: np.ndarray) -> np.ndarray:
    """Median of the finite values within ±_WINDOW of each entry, the entry itself left out."""
    win = sliding_window_view(np.pad(v, _WINDOW, constant_values=np.nan), 2 * _WINDOW + 1).copy()
    win[:, _WINDOW] = np.nan
    with np.errstate(all="ignore"), np.testing.suppress_warnings() as sup:
        sup.filter(RuntimeWarning)
        return np.nanmedian(win, axis=1)


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.log(a / b)


def _components(boxes: np.ndarray, looks: np.ndarray | None):
    """Distinct-frame indices and the log ratios (local, spike, skip, box) of their steps."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [F, 4], got shape {b.shape}")
    f = len(b)
    if looks is not None:
        lk = np.asarray(looks).reshape(len(looks), -1)
        if len(lk) != f:
            raise ValueError(f"looks must have one entry per box ({f}), got {len(lk)}")
        same = np.all(lk[1:] == lk[:-1], axis=1)
    else:
        same = np.all(b[1:] == b[:-1], axis=1)
    distinct = np.flatnonzero(np.r_[True, ~same])  # held repeats set aside
    if len(distinct) < 3:
        return distinct, None
    bd = b[distinct]
    box_step = np.r_[np.nan, box_steps(bd)[1:]]
    if looks is not None:
        x = lk[distinct].astype(np.float64)
        x -= x.mean(axis=1, keepdims=True)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
        step = np.maximum(np.r_[np.nan, np.linalg.norm(np.diff(x, axis=0), axis=1)], _LOOK_FLOOR)
        skip = np.maximum(np.r_[np.nan, np.linalg.norm(x[2:] - x[:-2], axis=1), np.nan], _LOOK_FLOOR)
    else:
        step = box_step
        pairs = np.concatenate([bd[:-2], bd[2:]], axis=1).reshape(-1, 2, 4)
        skip = np.r_[np.nan, [box_steps(p)[1] for p in pairs], np.nan]
    local = _local_median(step)
    neighbours = np.fmax(np.r_[np.nan, step[:-1]], np.r_[step[1:], np.nan])
    bs = np.maximum(box_step, _BOX_FLOOR)
    zb = _log_ratio(bs, np.maximum(_local_median(bs), _BOX_FLOOR))
    z = np.stack([_log_ratio(step, local), _log_ratio(step, neighbours), _log_ratio(skip, local), zb])
    return distinct, z


def jump_scores(boxes: np.ndarray, looks: np.ndarray | None = None) -> np.ndarray:
    """Per-frame jump-cut score [F] (> JUMP_THRESHOLD: frame t starts a new piece; -inf: held).

    ``boxes`` [F, 4] face boxes (any pixel units); ``looks`` [F, H, W] per-frame thumbnails from
    :func:`crop_look` (None: the box alone, with the same tests on box steps).
    """
    out = np.full(len(boxes), -np.inf)
    distinct, z = _components(boxes, looks)
    if z is None:
        return out
    margin = np.minimum.reduce([z[0] - _LOCAL, z[1] - _SPIKE, z[2] - _SKIP])
    if looks is not None:
        margin = margin + _BOX_WEIGHT * z[3]
    margin[~np.isfinite(margin)] = -np.inf
    out[distinct] = margin
    return out


def find_jump_cuts(
    boxes: np.ndarray, looks: np.ndarray | None = None, threshold: float = JUMP_THRESHOLD
) -> list[int]:
    """Frame indices t where frame t jumps from frame t-1 (the first frame of the new piece).

    See :func:`jump_scores`; ``threshold`` moves the decision (higher: fewer cuts).
    """
    return np.flatnonzero(jump_scores(boxes, looks) > threshold).tolist()


def dropped_by_cuts(
    num_frames: int,
    fps: float,
    cuts: Sequence[int],
    pieces: Sequence[tuple[int, int]],
    min_s: float,
    start_s: float = 0.0,
) -> tuple[int, str | None]:
    """Frames of a window that no piece keeps after splitting at ``cuts``, and why (one line).

    ``pieces`` are the kept (start, end) frame ranges; ``start_s`` the window's first frame time,
    so the reason names source times.
    """
    kept = np.zeros(num_frames, bool)
    for a, b in pieces:
        kept[a:b] = True
    if kept.all():
        return 0, None
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < num_frames), num_frames]
    why = []
    for a, b in zip(bounds, bounds[1:]):
        if b <= a or kept[a:b].any():
            continue
        dur = (b - a) / fps
        at = lambda c: f"{start_s + c / fps:.2f} s"  # noqa: E731
        if a == 0:
            what = f"head {dur:.2f} s before the jump cut at {at(b)}"
        elif b == num_frames:
            what = f"tail {dur:.2f} s after the jump cut at {at(a)}"
        else:
            what = f"{dur:.2f} s between the jump cuts at {at(a)} and {at(b)}"
        why.append(f"{what} is shorter than {min_s:g} s")
    return int((~kept).sum()), "; ".join(why) or f"{int((~kept).sum())} frames not in any clip"
