"""Jump cuts: the same shot edited so the face suddenly jumps (position, zoom, pose, expression).

Content-based scene detectors miss them (same background, same person); EMO only absorbs them with
its speed layers. emokit finds them from what a cut does to the face, relative to the clip's own
recent motion, and splits the clip there. This module is the one definition of a jump cut.

Per frame: the face box and a "look" — a 32×32 grey thumbnail of the clip's fixed crop (cheap,
and deterministic per frame: it only depends on that frame's pixels and the clip's crop box).
Frames that repeat the previous image exactly (sample-and-hold of a 25 fps or VFR source onto
30 FPS) are set aside first: they are not motion, and their zero steps would drag every local
statistic down. The look is cut into a grid of cells (8×8 cells of 4×4 pixels, and again 16×16
of 2×2) and every cell is tested on its own: the step of frame t in that cell (RMS grey change
from the previous distinct frame) must be, at once,

- far above the cell's median step over the ±24 frames around it (``local``: sudden for this
  part of the picture in this clip — the mouth cell is always busy, a background cell never),
- far above both neighbouring steps of the cell (``spike``: one step, not a fast but continuous
  turn),
- still far from the frame before when frame t is skipped (``skip``: not one glitched frame).

Before the tests, a frame-rate cadence of the source is taken out of the steps. A source converted
from another rate (30 fps to 25 by dropping every sixth frame; frames blended or repeated)
shows motion in a fixed pattern: on speaker_a every fifth step spans two original frames and is
twice the others, which the spike test reads as a small cut. When the frame's median cell step,
relative to its local median, follows a period of 2-8 distinct frames (the phase medians explain
at least 20 % of its variance), each step is divided by the median relative step of its phase
around it (factors below 1 are left at 1).

A cell's margin is the smallest of those log-ratio margins; a grid's score is the 90th
percentile of its cells' margins, and the frame's score is the lower of the two grids' scores.
Why per cell: a cut moves the whole head at once (face, hair, neck, shoulders: many cells jump
together), while a blink or a mouth movement is a large change confined to a few cells — a
whole-crop distance cannot tell them apart, a per-cell rank can. Against the whole-crop look this
lifted recall on the constructed cuts of ``benchmarks/bench_jumpcuts.py`` from ~60 % to ~80 %
at no false split (BENCHMARKS.md). Why two grids: a cut moves edges at every scale, so both
grids score it high; the natural events that score high differ between them (a fast head move
on the coarse cells; speaker_vfr's and a cadenced source's own motion on the fine ones), so the
lower score lowers the highest natural score more than the cuts' (0.70 → 0.63 on the shared
videos; recall at the same margin 78.8 → ~82 %). Without looks the same three tests run on the
face box's steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from einops import rearrange
from numpy.lib.stride_tricks import sliding_window_view

from emokit.config import LabelConfig

LOOK_SIDE = 32  # thumbnail side in pixels
_WINDOW = 24  # distinct frames on each side for the local median step (~1 s)
GRIDS = (8, 16)  # the look is tested as 8×8 and as 16×16 cells; the frame's score is the lower
_QUANTILE = 0.9  # a grid's score: this quantile of its cells' margins
# Log-ratio thresholds of the three tests (per cell, or on box steps without looks).
_LOCAL = 1.0
_SPIKE = 0.9
_SKIP = 0.2
_CADENCE_PERIODS = range(2, 9)  # distinct frames: 25 fps from 30 has period 5
_CADENCE_STRENGTH = 0.2  # share of the step variance the phase pattern must explain
_BOX_FLOOR = 1e-3  # face sizes: box steps below this are detector rounding, not motion
# Cell steps (RMS, grey levels 0-255) below this are encoder noise, not motion: floored steps and
# medians keep a re-encoded still picture, whose keyframes stand out against a near-zero median,
# from cutting.
_CELL_FLOOR = 0.5
# Score above which a frame is a cut (the recipe's `label.jump_score`, defined in config): 0.68,
# 0.05 above the highest score of any frame of the continuous shared videos, whole or in label's
# 6-8 s windows (0.63: a fast head move of head_turn, frame 160), bar speaker_b's frame 271, a
# real edit in that source (BENCHMARKS.md).
JUMP_THRESHOLD = LabelConfig.jump_score


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
    """Median of the finite values within ±_WINDOW of each entry along axis 0, itself left out.

    Sorted windows with NaN last and the median read at the valid count: the same values as
    ``np.nanmedian``, whose masked path is ~20× slower on [frames, cells] windows."""
    pad = [(_WINDOW, _WINDOW)] + [(0, 0)] * (v.ndim - 1)
    win = sliding_window_view(np.pad(v, pad, constant_values=np.nan), 2 * _WINDOW + 1, axis=0).copy()
    win[..., _WINDOW] = np.nan
    win.sort(axis=-1)
    k = np.sum(~np.isnan(win), axis=-1)
    lo = np.take_along_axis(win, np.maximum((k - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(win, np.maximum(k // 2, 0)[..., None], -1)[..., 0]
    return np.where(k > 0, 0.5 * (lo + hi), np.nan)


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.log(a / b)


def _cell_steps(looks: np.ndarray, grid: int = GRIDS[0]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell RMS grey step from the previous look [n, C] and over a skipped frame [n, C]
    (C = grid²)."""
    x = looks.astype(np.float64)
    x = rearrange(x, "n (gy ch) (gx cw) -> n (gy gx) (ch cw)", gy=grid, gx=grid)
    pad = np.full((1, x.shape[1]), np.nan)
    step = np.sqrt(np.mean((x[1:] - x[:-1]) ** 2, axis=2))
    skip = np.sqrt(np.mean((x[2:] - x[:-2]) ** 2, axis=2))
    return np.r_[pad, step], np.r_[pad, skip, pad]


def cadence_factors(step: np.ndarray) -> np.ndarray:
    """Per distinct frame, how much its step is enlarged by the source's frame-rate cadence [n].

    ``step`` [n, C] cell steps (NaN in row 0). 1 everywhere when no period of
    ``_CADENCE_PERIODS`` explains ``_CADENCE_STRENGTH`` of the frame's relative log step (the
    clip's phase medians), or on clips too short to show four periods. Otherwise each frame's
    factor is the median relative step of the frames of its phase within ±_WINDOW frames (itself
    left out) over that of the middle phase there, floored at 1: local, so that after a cut,
    which shifts the phase, it locks again.
    """
    n = len(step)
    out = np.ones(n)
    with np.errstate(all="ignore"):
        frame = np.log(np.median(np.maximum(step, _CELL_FLOOR), axis=1))  # NaN in row 0
    rel = frame - _local_median(frame)
    ok = np.isfinite(rel)
    var = float(np.var(rel[ok])) if ok.sum() > 1 else 0.0
    if var <= 0:
        return out
    idx = np.arange(n)
    best, found = _CADENCE_STRENGTH, 0
    for period in _CADENCE_PERIODS:
        if ok.sum() < 4 * period:
            break
        phase = np.array([np.median(rel[ok & (idx % period == p)]) for p in range(period)])
        strength = 1.0 - float(np.var(rel[ok] - phase[idx % period][ok])) / var
        if strength >= best:
            best, found = strength, period
    if not found:
        return out
    by_phase = np.where(idx[:, None] % found == np.arange(found), rel[:, None], np.nan)  # [n, P]
    local = _local_median(by_phase)  # [n, P] each phase's median around every frame
    with np.errstate(all="ignore"):
        own = local[idx, idx % found] - np.nanmedian(local, axis=1)  # vs the middle phase
    return np.maximum(np.exp(np.nan_to_num(own, nan=0.0)), 1.0)


def _margins(step: np.ndarray, skip: np.ndarray, floor: float) -> np.ndarray:
    """The smallest margin of the local, spike and skip tests, per entry ([n] or [n, C])."""
    step, skip = np.maximum(step, floor), np.maximum(skip, floor)
    local = _local_median(step)
    pad = np.full((1,) + step.shape[1:], np.nan)
    neighbours = np.fmax(np.r_[pad, step[:-1]], np.r_[step[1:], pad])
    z = np.stack([_log_ratio(step, local), _log_ratio(step, neighbours), _log_ratio(skip, local)])
    m = np.minimum.reduce([z[0] - _LOCAL, z[1] - _SPIKE, z[2] - _SKIP])
    return np.where(np.isfinite(m), m, -np.inf)


def distinct_frames(per_frame: np.ndarray) -> np.ndarray:
    """Indices of the frames that do not repeat the previous one exactly (``per_frame`` [F, ...]:
    looks, or boxes without looks); frame 0 always counts."""
    flat = np.asarray(per_frame).reshape(len(per_frame), -1)
    return np.flatnonzero(np.r_[True, ~np.all(flat[1:] == flat[:-1], axis=1)])


def _distinct_margins(
    boxes: np.ndarray, looks: np.ndarray | None, cadence: bool = True, grids: Sequence[int] = GRIDS
):
    """Distinct-frame indices and their scores (held repeats set aside)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [F, 4], got shape {b.shape}")
    f = len(b)
    if looks is not None:
        lk = np.asarray(looks)
        if len(lk) != f:
            raise ValueError(f"looks must have one entry per box ({f}), got {len(lk)}")
        side = int(np.lcm.reduce(list(grids)))
        if lk.ndim != 3 or lk.shape[1] % side or lk.shape[2] % side:
            raise ValueError(f"looks must be [F, H, W] with H, W multiples of {side}, got {lk.shape}")
    distinct = distinct_frames(lk if looks is not None else b)
    if len(distinct) < 3:
        return distinct, None
    if looks is not None:
        steps = [_cell_steps(lk[distinct], grid) for grid in grids]
        # the frame's cadence, read once, on the first grid's cells
        factors = cadence_factors(steps[0][0]) if cadence else np.ones(len(distinct))
        scores = [
            np.quantile(
                np.maximum(_margins(step / factors[:, None], skip, _CELL_FLOOR), -1e3), _QUANTILE, axis=1
            )
            for step, skip in steps
        ]
        return distinct, np.minimum.reduce(scores)
    bd = b[distinct]
    step = np.r_[np.nan, box_steps(bd)[1:]]
    pairs = np.concatenate([bd[:-2], bd[2:]], axis=1).reshape(-1, 2, 4)
    skip = np.r_[np.nan, [box_steps(p)[1] for p in pairs], np.nan]
    return distinct, _margins(step, skip, _BOX_FLOOR)


def jump_scores(
    boxes: np.ndarray,
    looks: np.ndarray | None = None,
    cadence: bool = True,
    grids: Sequence[int] = GRIDS,
) -> np.ndarray:
    """Per-frame jump-cut score [F] (> JUMP_THRESHOLD: frame t starts a new piece; -inf: held).

    ``boxes`` [F, 4] face boxes (any pixel units); ``looks`` [F, H, W] per-frame thumbnails from
    :func:`crop_look` (None: the box alone, with the same tests on box steps). ``cadence=False``
    leaves a source's frame-rate cadence in the steps, and ``grids=(8,)`` scores the coarse cells
    alone (the detectors before each step; the benchmark compares them).
    """
    out = np.full(len(boxes), -np.inf)
    distinct, margin = _distinct_margins(boxes, looks, cadence, grids)
    if margin is not None:
        out[distinct] = np.where(margin > -1e3, margin, -np.inf)
    return out


def find_jump_cuts(
    boxes: np.ndarray,
    looks: np.ndarray | None = None,
    threshold: float = JUMP_THRESHOLD,
    cadence: bool = True,
    grids: Sequence[int] = GRIDS,
) -> list[int]:
    """Frame indices t where frame t jumps from frame t-1 (the first frame of the new piece).

    See :func:`jump_scores`; ``threshold`` moves the decision (higher: fewer cuts).
    """
    return np.flatnonzero(jump_scores(boxes, looks, cadence, grids) > threshold).tolist()


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
