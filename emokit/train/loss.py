"""The diffusion training objective of one batch: MSE on the scheduler's target (eps as in EMO,
v, or x0) with EMO's condition dropout.

Separate from the loop (emokit.train.loop) so benchmarks and tests can evaluate the exact loss a
training step optimises without running one.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from einops import rearrange
from torch import nn

from emokit.models import EMOModel
from emokit.train.latent_cache import sample_latents
from emokit.train.weighting import region_weights, weighted_mse

__all__ = ["DiffusionLoss", "condition_drops"]


class DiffusionLoss(nn.Module):
    """The loss of one batch against the scheduler's ``prediction_type`` target (eps, v or x0). The
    whole step sits in one forward, so DDP syncs every trainable part (ReferenceNet included)
    however the model routes through it."""

    def __init__(
        self,
        model: EMOModel,
        scheduler: DDPMScheduler,
        stage: int,
        cond_dropout: float,
        cond_drop_both: float = 0.0,
        motion_dropout: float = 0.0,
        *,
        face_weight: float = 1.0,
        mouth_weight: float = 1.0,
        motion_noise: float = 0.0,
    ):
        super().__init__()
        self.model, self.scheduler = model, scheduler
        self.stage, self.cond_dropout = stage, cond_dropout
        self.cond_drop_both, self.motion_dropout = cond_drop_both, motion_dropout
        self.face_weight, self.mouth_weight, self.motion_noise = face_weight, mouth_weight, motion_noise

    def forward(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        pred, target = self.predict(batch, gen)
        weights = None
        if self.face_weight != 1.0 or self.mouth_weight != 1.0:
            weights = region_weights(
                batch["face_mask"],
                (pred.shape[-2], pred.shape[-1]),
                self.face_weight,
                self.mouth_weight,
            )
        return weighted_mse(pred, target, weights)

    def predict(
        self, batch: dict[str, torch.Tensor], gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target) [b,f,c,h,w] of one batch, every draw from ``gen``: what the loss
        compares, for diagnostics that weigh the error their own way (benchmarks/bench_audio_gain)."""
        model, device = self.model, batch["face_mask"].device
        b = batch["face_mask"].shape[0]
        with torch.no_grad():  # the VAE never trains; a latent sample, not the mean, as in SD
            latents = rearrange(self._encode(batch, "frames", gen), "(b f) c h w -> b f c h w", b=b)
            ref_latents = self._encode(batch, "reference", gen)
            motion = None
            if "motion" in batch or "motion_moments" in batch:
                motion = rearrange(self._encode(batch, "motion", gen), "(b n) c h w -> b n c h w", b=b)
                if self.motion_noise > 0:  # generated motion frames are never exact: train for it
                    jitter = torch.randn(motion.shape, generator=gen, device=device, dtype=motion.dtype)
                    motion = motion + self.motion_noise * jitter
        noise = torch.randn(latents.shape, generator=gen, device=device, dtype=latents.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=gen, device=device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        # condition dropout for classifier-free guidance, drawn per sample
        drop_ref, drop_audio = condition_drops(b, gen, self.cond_dropout, self.cond_drop_both)
        drop_motion = None
        if motion is not None and self.motion_dropout > 0:  # a first clip: zero motion maps
            drop_motion = torch.rand(b, generator=gen, device=device) < self.motion_dropout
        ref = model.reference(ref_latents, motion, drop_motion)
        pred = model(
            noisy,
            t,
            ref,
            audio=batch.get("audio"),
            face_mask=batch["face_mask"],
            speed=batch["speed"] if self.stage == 3 else None,
            drop_reference=drop_ref,
            drop_audio=drop_audio if self.stage > 1 else None,
        )
        return pred, self.target(latents, noise, t)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model regresses: the noise (eps), v = sqrt(ᾱ)·eps − sqrt(1−ᾱ)·x0, or x0."""
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":  # get_velocity broadcasts ᾱ_t over the trailing dims
            return self.scheduler.get_velocity(latents, noise, t)
        if kind == "sample":  # x0 itself
            return latents
        raise ValueError(f"unsupported prediction_type {kind!r} (epsilon, v_prediction or sample)")

    def _encode(self, batch: dict[str, torch.Tensor], key: str, gen: torch.Generator) -> torch.Tensor:
        """Latents of ``batch[key]`` (pixels [b,(f),3,H,W]) flattened to [(b f),C,h,w], or sampled
        from ``batch[key + "_moments"]`` (cached VAE moments, emokit.train.latent_cache): the
        same generator draws either way."""
        moments = batch.get(key + "_moments")
        x = batch[key] if moments is None else moments
        if x.ndim == 5:
            x = rearrange(x, "b f c h w -> (b f) c h w")
        if moments is None:
            return self.model.encode(x, gen)
        return sample_latents(x, gen, self.model.config.vae_scaling_factor)


def condition_drops(
    b: int, gen: torch.Generator, alone: float, both: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop_reference, drop_audio) bool [b] from one uniform draw per sample: the reference
    alone with probability ``alone``, the audio alone with ``alone``, both with ``both``.

    Classifier-free guidance at inference drops both together; two independent 5 % draws would
    train that branch on 0.25 % of samples only, hence the separate "both" bucket. Stage 1 has
    no audio, so its reference is dropped with alone + both.
    """
    u = torch.rand(b, generator=gen, device=gen.device)
    drop_ref = u < alone
    drop_audio = (u >= alone) & (u < 2 * alone)
    both_ = (u >= 2 * alone) & (u < 2 * alone + both)
    return drop_ref | both_, drop_audio | both_
