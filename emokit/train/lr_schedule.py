"""Linear learning-rate warm-up, as a pure function of the optimizer step.

The factor depends on the step alone, so a resumed run gets the same learning rate at every step
as the uninterrupted one without any scheduler state in the checkpoint (the step is in it).
"""

from __future__ import annotations

from torch.optim import Optimizer


def warmup_factor(step: int, warmup_steps: int) -> float:
    """LR multiplier of 0-based optimizer step ``step``: (step + 1) / warmup_steps up to 1.

    The first step already moves (1 / warmup_steps, not diffusers' 0), the step with index
    ``warmup_steps - 1`` is the first at the full rate; ``warmup_steps`` 0 or 1 means no warm-up.
    """
    if step < 0 or warmup_steps < 0:
        raise ValueError(f"need step >= 0 and warmup_steps >= 0, got {step}, {warmup_steps}")
    if warmup_steps <= 1:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def set_lr(optimizer: Optimizer, base_lrs: list[float], step: int, warmup_steps: int) -> float:
    """Give each parameter group its base rate × the warm-up factor of ``step``; the first group's
    rate is returned (what log.csv shows)."""
    factor = warmup_factor(step, warmup_steps)
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor
    return base_lrs[0] * factor
