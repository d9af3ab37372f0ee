"""Sliding ±r frame windows with edge padding (EMO's audio and speed inputs look 2 frames around)."""

from __future__ import annotations

import torch


def frame_window(x: torch.Tensor, radius: int) -> torch.Tensor:
    """[b, f, *rest] → [b, f, 2r+1, *rest]: frame i sees frames i-r..i+r, clamped at the clip edges."""
    f = x.shape[1]
    offsets = torch.arange(-radius, radius + 1, device=x.device)
    index = (torch.arange(f, device=x.device)[:, None] + offsets[None, :]).clamp(0, f - 1)
    return x[:, index]
