"""Exponential moving average of the trainable parameters, kept by name for checkpoints.

Small on purpose: importing diffusers.training_utils costs seconds per process (it pulls in every
diffusers transformer), and a name-keyed shadow is what the checkpoint files need anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """shadow ← shadow + (1 − d)(param − shadow) after every optimizer step.

    d warms up as min(decay, (1 + t) / (10 + t)) (diffusers' schedule), so early averages are not
    dominated by the initial weights of a short run.
    """

    def __init__(self, named: list[tuple[str, nn.Parameter]], decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {decay}")
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay
        self.step_count = 0

    def current_decay(self) -> float:
        t = self.step_count
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current parameters into the average (call after ``optimizer.step()``)."""
        self.step_count += 1
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load(self, shadow: dict[str, torch.Tensor], step_count: int) -> None:
        """Restore averages saved by ``state_dict`` (same names) and the step they were at."""
        missing = [n for n in self.names if n not in shadow]
        if missing:
            raise ValueError(f"EMA checkpoint lacks {len(missing)} trainable tensor(s), e.g. {missing[0]}")
        self.shadow = [shadow[n].to(p.device, torch.float32) for n, p in zip(self.names, self.params)]
        self.step_count = step_count

    @contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the live parameters for the block (sampling during training
        without a second model), the trained ones back afterwards, bit for bit."""
        saved = [p.detach().clone() for p in self.params]
        try:
            for p, s in zip(self.params, self.shadow):
                p.copy_(s.to(p.dtype))
            yield
        finally:
            for p, s in zip(self.params, saved):
                p.copy_(s)
