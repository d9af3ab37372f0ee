"""EMOModel: the EMO audio-to-video diffusion model composed from diffusers parts.

Data flow of one ``forward`` (shapes for b clips of f frames, n motion frames, h×w latents):

    face_mask ─FaceLocator─▶ [b,4,h,w] ──(+ every frame)──┐
    noisy [b,f,4,h,w] ────────────────────────────────────┴─▶ (b f) 4 h w ─▶ backbone UNet ─▶ eps
    ReferenceFeatures.tokens ──▶ attn1 = reference-attention (ReferenceAttnProcessor)
    audio [b,f,L,D] ─AudioProjection─▶ (b f) T C ──▶ attn2 = audio-attention (encoder states)
    motion features (ReferenceNet) + speed [b,f] ─SpeedEncoder─▶ temporal modules (forward hooks)

With f = 1 and no motion frames the temporal modules are skipped: that is the stage-1 image model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from einops import rearrange, repeat
from torch import nn

from emokit.models import pretrained
from emokit.models.attention import install_reference_attention
from emokit.models.audio_proj import AudioProjection
from emokit.models.config import EMOConfig
from emokit.models.context import ContextSlot, FrameContext
from emokit.models.face_locator import FaceLocator
from emokit.models.pixel_latent import PixelLatent
from emokit.models.reference import ReferenceFeatures
from emokit.models.speed import SpeedEncoder
from emokit.models.stages import set_stage
from emokit.models.temporal import TemporalLayers


class InputShapeError(ValueError):
    """Tensors passed to EMOModel that do not fit together or the config."""


class EMOModel(nn.Module):
    """Backbone UNet + ReferenceNet + temporal/speed modules + face locator + audio projection."""

    def __init__(self, config: EMOConfig) -> None:
        super().__init__()
        self.config = config
        self._slot = ContextSlot()
        self.vae: AutoencoderKL | PixelLatent = (
            PixelLatent(config.pixel_patch, config.vae_scaling_factor)
            if config.latent == "pixel"
            else AutoencoderKL(**config.vae_kwargs())
        )
        self.vae.requires_grad_(False)
        self.backbone = UNet2DConditionModel(**config.unet_kwargs())
        self.reference_net = UNet2DConditionModel(**config.unet_kwargs())
        self.temporal = TemporalLayers(self.backbone, config)
        self.face_locator = FaceLocator(**config.fields_of(config.FACE_LOCATOR_FIELDS))
        self.audio_proj = AudioProjection(**config.fields_of(config.AUDIO_PROJ_FIELDS))
        self.speed_encoder = SpeedEncoder(**config.fields_of(config.SPEED_ENCODER_FIELDS))
        install_reference_attention(self.backbone, self.reference_net, self._slot)
        self.temporal.attach(self.backbone, self.reference_net, self._slot)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.conv_in.weight.device

    # ---- VAE -------------------------------------------------------------------------------
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] → scaled latents [B,4,H/8,W/8]; the posterior mean unless a
        generator asks for a sample (training noise on the latent). The pixel latent is exact."""
        if isinstance(self.vae, PixelLatent):
            return self.vae.encode(pixels.to(self.dtype))
        vae: AutoencoderKL = self.vae  # the KL VAE (mypy cannot narrow diffusers-based classes)
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        latents = dist.mean if generator is None else dist.sample(generator)
        return latents * self.config.vae_scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B,4,h,w] → pixels [B,3,8h,8w] in [-1,1]."""
        if isinstance(self.vae, PixelLatent):
            return self.vae.decode(latents).clamp(-1.0, 1.0)
        vae: AutoencoderKL = self.vae
        z = latents.to(vae.dtype) / self.config.vae_scaling_factor
        return vae.decode(z).sample.clamp(-1.0, 1.0)

    # ---- ReferenceNet ----------------------------------------------------------------------
    def _run_reference_net(
        self, latents: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One ReferenceNet pass at t = 0 with null cross-attention input; returns the recorded
        attn1 inputs and temporal-site outputs, both batch-first over ``latents``."""
        batch = latents.shape[0]
        timesteps = torch.zeros(batch, device=latents.device, dtype=torch.long)
        null = latents.new_zeros(batch, 1, self.config.cross_attention_dim).to(self.dtype)
        ctx = FrameContext(recording=True)
        with self._slot.use(ctx):
            self.reference_net(
                latents.to(self.dtype), timesteps, encoder_hidden_states=null, return_dict=False
            )
        return ctx.record_tokens, ctx.record_sites

    def motion_features(
        self, motion_latents: torch.Tensor, drop: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """ReferenceNet site features of motion frames [b,n,4,h,w] → {site: [(b n),c,h',w']};
        ``drop`` (bool [b]) gives those samples zero maps (see ``drop_motion_features``)."""
        _check(
            motion_latents.ndim == 5, f"motion_latents must be [b,n,4,h,w], got {tuple(motion_latents.shape)}"
        )
        _, sites = self._run_reference_net(rearrange(motion_latents, "b n c h w -> (b n) c h w"))
        return drop_motion_features(sites, drop, motion_latents.shape[1])

    def reference(
        self,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor | None = None,
        drop_motion: torch.Tensor | None = None,
    ) -> ReferenceFeatures:
        """Run ReferenceNet once per clip on the reference (and motion frames) in one batch;
        ``drop_motion`` (bool [b]) gives those samples zero motion maps (training's stand-in for
        a video's first clip, which has no previous frames)."""
        _check(
            ref_latents.ndim == 4 and ref_latents.shape[1] == self.config.latent_channels,
            f"ref_latents must be [b,{self.config.latent_channels},h,w], got {tuple(ref_latents.shape)}",
        )
        b, _, h, w = ref_latents.shape
        n = 0
        latents = ref_latents[:, None]
        if motion_latents is not None:
            _check(
                motion_latents.ndim == 5
                and motion_latents.shape[0] == b
                and motion_latents.shape[2:] == ref_latents.shape[1:],
                f"motion_latents must be [{b},n,{ref_latents.shape[1]},{h},{w}], got "
                f"{tuple(motion_latents.shape)}",
            )
            n = motion_latents.shape[1]
            latents = torch.cat([latents, motion_latents.to(ref_latents.dtype)], dim=1)
        tokens, sites = self._run_reference_net(rearrange(latents, "b t c h w -> (b t) c h w"))
        ref_tokens = {k: rearrange(v, "(b t) l c -> b t l c", b=b)[:, 0] for k, v in tokens.items()}
        motion = None
        if n:
            motion = {
                k: rearrange(rearrange(v, "(b t) c h w -> b t c h w", b=b)[:, 1:], "b n c h w -> (b n) c h w")
                for k, v in sites.items()
            }
            motion = drop_motion_features(motion, drop_motion, n)
        return ReferenceFeatures(ref_tokens, (h, w), motion, n)

    # ---- denoiser --------------------------------------------------------------------------
    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        ref: ReferenceFeatures | torch.Tensor,
        audio: torch.Tensor | None,
        face_mask: torch.Tensor,
        speed: torch.Tensor | None = None,
        motion_latents: torch.Tensor | None = None,
        drop_reference: torch.Tensor | None = None,
        drop_audio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps prediction [b,f,4,h,w]. ``audio`` [b,f,L,D] and ``speed`` [b,f] may carry their
        real neighbours: f + 2·window rows (see ``models.window``). Motion frames come from
        ``ref`` (``reference()``) or, when ``ref`` has none, from ``motion_latents`` (ReferenceNet
        then runs inside this call).
        Speed acts only through the temporal modules, so the image model (f = 1, no motion
        frames) ignores it. ``ref`` may also be the reference latents [b,4,h,w]: ReferenceNet then
        runs inside this call, which is what a DDP-wrapped training step needs (inference passes
        cached ``ReferenceFeatures``)."""
        if isinstance(ref, torch.Tensor):
            ref, motion_latents = self.reference(ref, motion_latents), None
        self._check_inputs(noisy, ref, audio, face_mask, speed, drop_reference, drop_audio)
        b, f, _, h, w = noisy.shape
        timesteps = torch.as_tensor(timesteps, device=noisy.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        _check(tuple(timesteps.shape) == (b,), f"timesteps must be [{b}], got {tuple(timesteps.shape)}")

        motion, n = ref.motion, ref.motion_frames
        if motion_latents is not None:
            _check(motion is None, "motion frames given twice: to reference() and to forward()")
            _check(
                motion_latents.ndim == 5
                and motion_latents.shape[0] == b
                and tuple(motion_latents.shape[2:]) == tuple(noisy.shape[2:]),
                f"motion_latents must be [{b},n,4,{h},{w}], got {tuple(motion_latents.shape)}",
            )
            motion, n = self.motion_features(motion_latents), motion_latents.shape[1]
        _check(
            n + f <= self.config.temporal_max_frames,
            f"{n} motion + {f} clip frames exceed temporal_max_frames={self.config.temporal_max_frames}",
        )

        dtype = self.dtype
        if audio is None:
            tokens = self.audio_proj.null_tokens(b, f)
        else:
            tokens = self.audio_proj(audio, drop_audio, f)
        temporal = f > 1 or n > 0
        speed_tokens = None
        if speed is not None and temporal:
            speed_tokens = rearrange(self.speed_encoder(speed, f), "b f t c -> (b f) t c")
        face = self.face_locator(face_mask.to(dtype))
        x = rearrange(noisy.to(dtype) + face[:, None], "b f c h w -> (b f) c h w")
        ctx = FrameContext(
            frames=f,
            ref_tokens=ref.tokens,
            ref_drop=drop_reference,
            motion=motion if n else None,
            motion_frames=n,
            speed_tokens=speed_tokens,
            temporal=temporal,
        )
        with self._slot.use(ctx):
            eps = self.backbone(
                x,
                repeat(timesteps, "b -> (b f)", f=f),
                encoder_hidden_states=rearrange(tokens.to(dtype), "b f t c -> (b f) t c"),
                return_dict=False,
            )[0]
        return rearrange(eps, "(b f) c h w -> b f c h w", f=f)

    def _check_inputs(
        self,
        noisy: torch.Tensor,
        ref: ReferenceFeatures,
        audio: torch.Tensor | None,
        face_mask: torch.Tensor,
        speed: torch.Tensor | None,
        drop_reference: torch.Tensor | None,
        drop_audio: torch.Tensor | None,
    ) -> None:
        """One-line InputShapeError for tensors that do not fit together."""
        c = self.config.latent_channels
        _check(
            noisy.ndim == 5 and noisy.shape[2] == c, f"noisy must be [b,f,{c},h,w], got {tuple(noisy.shape)}"
        )
        b, f, _, h, w = noisy.shape
        _check(
            ref.batch == b and ref.latent_hw == (h, w),
            f"ReferenceFeatures are for batch {ref.batch} at {ref.latent_hw}, noisy is batch {b} at {(h, w)}",
        )
        k = self.config.vae_factor
        _check(
            tuple(face_mask.shape) == (b, 1, h * k, w * k),
            f"face_mask must be [{b},1,{h * k},{w * k}], got {tuple(face_mask.shape)}",
        )
        for name, flag in (("drop_reference", drop_reference), ("drop_audio", drop_audio)):
            _check(flag is None or tuple(flag.shape) == (b,), f"{name} must be bool [{b}]")
        a, v = f + 2 * self.config.audio_window, f + 2 * self.config.speed_window  # with context
        if audio is not None:
            _check(
                audio.ndim == 4 and audio.shape[0] == b and audio.shape[1] in (f, a),
                f"audio must be [{b},{f} or {a} (±{self.config.audio_window} context),L,D], "
                f"got {tuple(audio.shape)}",
            )
        if speed is not None:
            _check(
                speed.ndim == 2 and speed.shape[0] == b and speed.shape[1] in (f, v),
                f"speed must be [{b},{f} or {v} (±{self.config.speed_window} context)], "
                f"got {tuple(speed.shape)}",
            )

    # ---- training helpers ------------------------------------------------------------------
    def set_stage(self, stage: int) -> list[nn.Parameter]:
        """requires_grad per EMO stage (see ``stages``); returns the trainable parameters."""
        return set_stage(self, stage)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet blocks and temporal modules in backward (memory for compute)."""
        for unet in (self.backbone, self.reference_net):
            unet.enable_gradient_checkpointing(self._slot.checkpoint_in_context)
        self.temporal.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        for unet in (self.backbone, self.reference_net):
            unet.disable_gradient_checkpointing()
        self.temporal.gradient_checkpointing = False

    # ---- files -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """``directory/model.safetensors`` + ``config.json``, each written atomically."""
        return pretrained.save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> EMOModel:
        """Load what ``save_pretrained`` wrote (strict: every tensor must match the config)."""
        return pretrained.load_model(cls, directory)

    @classmethod
    def from_sd15(
        cls,
        path_or_hub_id: str | Path,
        config: EMOConfig,
        motion_adapter: str | Path | None = None,
    ) -> EMOModel:
        """Backbone + ReferenceNet from the diffusers UNet (``unet/``), VAE from ``vae/``,
        temporal self-attention optionally from a diffusers ``MotionAdapter``."""
        return pretrained.init_from_sd15(cls, path_or_hub_id, config, motion_adapter)


def drop_motion_features(
    sites: dict[str, torch.Tensor], drop: torch.Tensor | None, n: int
) -> dict[str, torch.Tensor]:
    """Motion-frame site features {site: [(b n),c,h,w]} with the samples flagged in ``drop``
    (bool [b]) set to zero maps.

    EMO starts a video's first clip from zero motion maps. Training draws that case for a share
    of its samples (``TrainConfig.motion_dropout``) and generation feeds exactly the same zeros
    to the first clip, so the temporal modules know the input they meet there. (Zero *latents*
    through ReferenceNet, the alternative, give non-zero features training never shows.)
    """
    if drop is None:
        return sites
    keep = ~repeat(drop.to(torch.bool), "b -> (b n) 1 1 1", n=n)
    return {
        k: torch.where(keep, v, torch.zeros((), dtype=v.dtype, device=v.device)) for k, v in sites.items()
    }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputShapeError(message)
