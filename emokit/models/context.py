"""Per-call conditioning that the attention processors and temporal hooks read.

diffusers calls attention processors and block layers with fixed arguments, so EMO's extra inputs
(reference tokens, frame count, motion features, speed tokens) travel in a ``FrameContext`` that
``EMOModel`` makes active for the duration of one backbone/ReferenceNet call. The slot belongs to
the model (nothing global). Gradient checkpointing re-runs layers during backward, long after the
call returned, so ``checkpoint_in_context`` captures the active context and re-activates it for
the recomputation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint


@dataclass
class FrameContext:
    """What one UNet call needs beyond diffusers' own arguments."""

    frames: int = 1  # clip frames per sample; the UNet batch is (b f)
    # backbone: ReferenceNet attn1 inputs per processor name, [b, tokens, c]; None = no reference
    ref_tokens: dict[str, torch.Tensor] | None = None
    ref_drop: torch.Tensor | None = None  # bool [b]: these samples attend only to themselves
    # backbone: ReferenceNet features of the motion frames per temporal site, [(b n), c, h, w]
    motion: dict[str, torch.Tensor] | None = None
    motion_frames: int = 0
    speed_tokens: torch.Tensor | None = None  # [(b f), tokens, speed_dim]
    temporal: bool = True  # False for the image model (one frame, no motion frames)
    # ReferenceNet: filled during the call
    record_tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    record_sites: dict[str, torch.Tensor] = field(default_factory=dict)
    recording: bool = False


class ContextSlot:
    """Holds the active FrameContext of one model (None outside its forward)."""

    def __init__(self) -> None:
        self.active: FrameContext | None = None

    @contextlib.contextmanager
    def use(self, ctx: FrameContext | None) -> Iterator[FrameContext | None]:
        """Make ``ctx`` active for the block; restores the previous one (nesting-safe)."""
        previous, self.active = self.active, ctx
        try:
            yield ctx
        finally:
            self.active = previous

    def require(self) -> FrameContext:
        if self.active is None:
            raise RuntimeError("EMO layers ran outside EMOModel (no active FrameContext)")
        return self.active

    def checkpoint_in_context(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A diffusers ``gradient_checkpointing_func`` whose recomputation sees the same context."""
        return torch.utils.checkpoint.checkpoint(self._run, self.active, fn, *args, use_reentrant=False)

    def _run(self, ctx: FrameContext | None, fn: Callable[..., Any], *args: Any) -> Any:
        with self.use(ctx):
            return fn(*args)
