"""Gradient accumulation: one optimizer step over ``grad_accum`` micro-batches, through
accelerate's ``accumulate`` (no DDP all-reduce before the last micro-batch, each loss divided by
the micro-batch count), so N micro-batches of B clips give the gradient of one batch of N·B.

Micro-batch m of optimizer step s is micro-step k = s·N + m everywhere: it takes the samples and
the noise seed that ``StepBatches`` and ``step_seed`` give step k of a run without accumulation,
so N = 1 is exactly the plain loop and a resumed run continues at micro-step start·N.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from accelerate import Accelerator
from torch import nn


def micro_steps(step: int, grad_accum: int) -> range:
    """Micro-step indices of optimizer step ``step`` (0-based)."""
    return range(step * grad_accum, (step + 1) * grad_accum)


def accumulate_gradients(
    acc: Accelerator,
    net: nn.Module,
    batches: Iterator[dict[str, torch.Tensor | str]],
    seeds: list[int],
    gen: torch.Generator,
) -> torch.Tensor:
    """Forward + backward of one micro-batch per seed; leaves the gradients of the mean loss on
    the parameters and returns that mean loss (detached). ``acc`` must have been built with
    ``gradient_accumulation_steps=len(seeds)``: the optimizer step that follows is then the one
    accelerate lets through (``sync_gradients``)."""
    if acc.gradient_accumulation_steps != len(seeds):
        raise ValueError(
            f"{len(seeds)} micro-batches per step but the Accelerator accumulates "
            f"{acc.gradient_accumulation_steps}"
        )
    losses = []
    for seed in seeds:
        batch = {
            k: v.to(acc.device, non_blocking=True) for k, v in next(batches).items() if torch.is_tensor(v)
        }
        gen.manual_seed(seed)
        with acc.accumulate(net):
            loss = net(batch, gen)
            acc.backward(loss)  # divides by gradient_accumulation_steps
        losses.append(loss.detach())
    if not acc.sync_gradients:  # the micro-step count drifted from accelerate's own
        raise RuntimeError("gradient accumulation out of step: the last micro-batch did not sync")
    return torch.stack(losses).mean()
