"""Sliding ±r frame windows (EMO's audio and speed inputs look 2 frames around each frame).

A clip's input may carry its real neighbours: ``frames + 2r`` rows, r before the clip and r after
(the dataset and the generator cut them from the whole audio, so frames at a clip edge see the
real audio next to the clip). Rows are repeated only where none exist: at the true ends of the
audio, by whoever cuts the rows, or here when the input has just the clip's ``frames`` rows.
"""

from __future__ import annotations

import torch


def frame_window(x: torch.Tensor, radius: int, frames: int | None = None) -> torch.Tensor:
    """[b, n, *rest] → [b, frames, 2r+1, *rest]: clip frame i sees frames i-r..i+r.

    ``n == frames + 2r``: the input carries r context rows on each side (clip frame i is row
    i + r), no padding. ``n == frames`` (the default when ``frames`` is None): the clip alone,
    clamped at its edges.
    """
    n = x.shape[1]
    frames = n if frames is None else frames
    offsets = torch.arange(-radius, radius + 1, device=x.device)
    centre = torch.arange(frames, device=x.device)[:, None]
    if n == frames + 2 * radius:
        return x[:, centre + radius + offsets[None, :]]
    if n != frames:
        raise ValueError(f"expected {frames} or {frames + 2 * radius} (±{radius} context) rows, got {n}")
    return x[:, (centre + offsets[None, :]).clamp(0, frames - 1)]


def context_rows(first: int, frames: int, radius: int, total: int) -> list[int] | None:
    """Row indices [first - r, first + frames + r) clamped to [0, total): a clip's rows with ±r
    real neighbours, repeating the first/last row only past the true ends; None when total is 0."""
    if total <= 0:
        return None
    return [min(max(i, 0), total - 1) for i in range(first - radius, first + frames + radius)]
