"""ReferenceFeatures: what one ReferenceNet pass over a clip's reference (and motion frames) yields.

Computed once per clip and reused at every denoising step (the expensive part of EMO's
conditioning never re-runs inside the sampler loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReferenceFeatures:
    """ReferenceNet self-attention inputs of the reference image and motion-frame site features."""

    tokens: dict[str, torch.Tensor]  # attn1 processor name → [b, h*w at that level, c]
    latent_hw: tuple[int, int]  # latent size the features were computed at
    motion: dict[str, torch.Tensor] | None = None  # temporal site → [(b n), c, h', w']
    motion_frames: int = 0

    @property
    def batch(self) -> int:
        return next(iter(self.tokens.values())).shape[0]

    def repeat(self, times: int) -> ReferenceFeatures:
        """Batch ``times`` copies, ordered ``(k b)`` like ``torch.cat([x] * times)`` (CFG batches).

        Motion features are ``(b n)``-major, so whole copies concatenate to ``(k b n)`` too.
        """
        motion = None
        if self.motion is not None:
            motion = {k: torch.cat([v] * times) for k, v in self.motion.items()}
        return ReferenceFeatures(
            tokens={k: torch.cat([v] * times) for k, v in self.tokens.items()},
            latent_hw=self.latent_hw,
            motion=motion,
            motion_frames=self.motion_frames,
        )

    def detach(self) -> ReferenceFeatures:
        """The same features cut from the autograd graph (inference caches)."""
        motion = None if self.motion is None else {k: v.detach() for k, v in self.motion.items()}
        return ReferenceFeatures(
            tokens={k: v.detach() for k, v in self.tokens.items()},
            latent_hw=self.latent_hw,
            motion=motion,
            motion_frames=self.motion_frames,
        )
