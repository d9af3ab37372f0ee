"""EMOConfig: every size of the EMO model in one frozen dataclass, so a checkpoint is its config.

The UNet fields use diffusers' names and meaning (``attention_head_dim`` is the number of heads in
the SD1.5 layout, a diffusers naming quirk kept so SD1.5 configs compare field by field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A model config (dict or file) that does not describe an EMOConfig."""


@dataclass(frozen=True)
class EMOConfig:
    # Backbone / ReferenceNet (diffusers UNet2DConditionModel, SD1.5 layout)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    up_block_types: tuple[str, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    layers_per_block: int = 2
    cross_attention_dim: int = 768
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    sample_size: int = 64  # latent side the UNet was trained at (512 px / 8)
    latent_channels: int = 4
    # Latent space: "kl" = diffusers AutoencoderKL (SD1.5's VAE; the latent is
    # 2**(len(vae_block_out_channels)-1) times smaller), or "pixel" = lossless space-to-depth of
    # pixel_patch² patches into latent_channels = 3·pixel_patch² channels (PixelLatent, no weights)
    latent: str = "kl"
    pixel_patch: int = 4
    vae_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_norm_num_groups: int = 32
    vae_scaling_factor: float = 0.18215
    # Temporal modules (AnimateDiff layout: one after every resnet/attention layer of every block)
    temporal_heads: int = 8
    temporal_norm_groups: int = 32
    temporal_max_frames: int = 32  # motion + clip frames one temporal attention can see
    temporal_mid: bool = True  # a temporal module after the mid block's attention (AnimateDiff v2)
    # Audio projection: ±audio_window frames of [audio_layers, audio_dim] wav2vec features per frame
    audio_layers: int = 12
    audio_dim: int = 768
    audio_window: int = 2
    audio_hidden: int = 1024
    audio_tokens: int = 32
    # Speed encoder: s_k = tanh((v - c_k) / r_k * 3), ±speed_window frames, MLP → speed_tokens
    speed_centres: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    speed_radii: tuple[float, ...] = (0.5,) * 9
    speed_window: int = 2
    speed_hidden: int = 512
    speed_tokens: int = 4
    speed_dim: int = 768
    # Face locator: strided conv channels (each step halves the side), last conv zero-initialised
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self) -> None:
        checks = [
            (len(self.down_block_types) == len(self.block_out_channels), "down_block_types"),
            (len(self.up_block_types) == len(self.block_out_channels), "up_block_types"),
            (len(self.speed_centres) == len(self.speed_radii), "speed_centres/speed_radii"),
            (all(r > 0 for r in self.speed_radii), "speed_radii must be > 0"),
            (self.latent in ("kl", "pixel"), "latent must be 'kl' or 'pixel'"),
            (
                self.latent != "pixel" or self.latent_channels == 3 * self.pixel_patch**2,
                "latent_channels must be 3 * pixel_patch**2 for the pixel latent",
            ),
            (2 ** (len(self.face_locator_channels) - 1) == self.vae_factor, "face_locator_channels"),
            (all(c % self.temporal_heads == 0 for c in self.block_out_channels), "temporal_heads"),
        ]
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise ConfigError(f"inconsistent EMOConfig fields: {', '.join(bad)}")

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell along one side."""
        if self.latent == "pixel":
            return self.pixel_patch
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def speed_buckets(self) -> int:
        return len(self.speed_centres)

    @classmethod
    def sd15(cls) -> EMOConfig:
        """The real size: SD1.5 backbone + ReferenceNet, AnimateDiff-sized temporal modules."""
        return cls()

    @classmethod
    def tiny(cls) -> EMOConfig:
        """A few-hundred-kB model with every EMO part, for tests and the CPU demo (64 px → 8²)."""
        return cls(
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=8,
            sample_size=8,
            vae_block_out_channels=(8, 16, 16, 16),
            vae_layers_per_block=1,
            vae_norm_num_groups=8,
            temporal_heads=4,
            temporal_norm_groups=8,
            audio_layers=2,
            audio_dim=16,
            audio_hidden=32,
            audio_tokens=4,
            speed_centres=(0.0, 1.0, 2.0, 3.0),
            speed_radii=(1.0, 1.0, 1.0, 1.0),
            speed_hidden=32,
            speed_tokens=2,
            speed_dim=32,
            face_locator_channels=(4, 8, 8, 16),
        )

    @classmethod
    def tiny_face(cls) -> EMOConfig:
        """The tiny UNet, twice as wide, on a lossless pixel latent at 64 px (4×4 patches → 48
        channels on a 16² grid): a size that learns one speaker's face on a CPU in minutes
        (benchmarks/bench_learn.py, the demo). The 16² grid puts the mouth on a few cells instead of
        the one cell of the tiny VAE's 8² grid; 64 UNet channels keep conv_in from squeezing the
        48 latent channels (the noise to predict is 48-dimensional per cell)."""
        return dataclasses.replace(
            cls.tiny(),
            latent="pixel",
            pixel_patch=4,
            latent_channels=48,
            vae_scaling_factor=1.0,
            sample_size=16,
            block_out_channels=(64, 128),
            norm_num_groups=16,
            temporal_norm_groups=16,
            cross_attention_dim=64,
            attention_head_dim=4,
            face_locator_channels=(16, 32, 64),
        )

    def unet_kwargs(self) -> dict[str, Any]:
        """Arguments for diffusers ``UNet2DConditionModel`` (backbone and ReferenceNet alike)."""
        return {
            "sample_size": self.sample_size,
            "in_channels": self.latent_channels,
            "out_channels": self.latent_channels,
            "down_block_types": self.down_block_types,
            "up_block_types": self.up_block_types,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "cross_attention_dim": self.cross_attention_dim,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
        }

    def vae_kwargs(self) -> dict[str, Any]:
        """Arguments for diffusers ``AutoencoderKL``."""
        n = len(self.vae_block_out_channels)
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * n,
            "up_block_types": ("UpDecoderBlock2D",) * n,
            "block_out_channels": self.vae_block_out_channels,
            "layers_per_block": self.vae_layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.vae_norm_num_groups,
            "sample_size": self.sample_size * self.vae_factor,
            "scaling_factor": self.vae_scaling_factor,
        }

    # Each emokit part's constructor takes the EMOConfig fields it uses, by the same names, so a part's
    # config.json is a slice of this config and ``emokit.models.parts.join_parts`` reassembles it.
    BACKBONE_FIELDS = (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "cross_attention_dim",
        "attention_head_dim",
        "norm_num_groups",
        "sample_size",
        "latent_channels",
        "temporal_heads",
        "temporal_norm_groups",
        "temporal_max_frames",
        "temporal_mid",
        "speed_dim",
    )
    FACE_LOCATOR_FIELDS = ("latent_channels", "face_locator_channels")
    AUDIO_PROJ_FIELDS = (
        "audio_layers",
        "audio_dim",
        "audio_window",
        "audio_hidden",
        "audio_tokens",
        "cross_attention_dim",
    )
    SPEED_ENCODER_FIELDS = (
        "speed_centres",
        "speed_radii",
        "speed_window",
        "speed_hidden",
        "speed_tokens",
        "speed_dim",
    )

    def fields_of(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The named fields as constructor arguments of one part (e.g. ``FACE_LOCATOR_FIELDS``)."""
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EMOConfig:
        """Inverse of ``to_dict``; unknown keys are an error so a typo never becomes a default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown EMOConfig keys: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)
