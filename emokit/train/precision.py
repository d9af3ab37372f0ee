"""`--mixed-precision`: which autocast accelerate gets, decided once per run with a reason when
the machine cannot do what was asked."""

from __future__ import annotations

import torch

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


def resolve_mixed_precision(value: str, cuda: bool) -> str:
    """ "auto" → bf16 on a CUDA device that computes it natively, else "no"; an explicit value is
    kept where accelerate can run it and refused (ValueError, one line) where it cannot."""
    if value not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {value!r}")
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if value == "auto":
        return "bf16" if bf16_ok else "no"
    if value == "fp16" and not cuda:
        # accelerate silently trains fp32 for fp16 on CPU (no CPU fp16 autocast + grad scaler)
        raise ValueError(
            "mixed_precision fp16 needs a CUDA device (accelerate has no fp16 on CPU); use bf16 or no"
        )
    if value == "bf16" and cuda and not bf16_ok:
        raise ValueError("mixed_precision bf16: this GPU has no native bf16 (pre-Ampere); use fp16 or no")
    return value
