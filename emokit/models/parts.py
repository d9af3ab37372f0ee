"""EMOModel as diffusers model folders: one ``ModelMixin`` per part, split and joined without copies.

Why: a diffusers user loads a model part with its own class (``UNet2DConditionModel.from_pretrained(
DIR/"reference_net")``) and a whole pipeline from ``model_index.json``; training keeps working on one
``EMOModel``. ``split_model`` hands out the EMOModel's own modules (same tensors) and ``join_parts``
puts loaded parts back into an EMOModel, so nothing is converted or copied either way.

One folder per component (``COMPONENTS``), each ``config.json`` + ``diffusion_pytorch_model.safetensors``:

    vae/            AutoencoderKL (latent "kl") or PixelLatent (latent "pixel")
    reference_net/  UNet2DConditionModel
    backbone/       EMOBackbone: the backbone UNet2DConditionModel (its attn2 is the audio-attention)
                    + TemporalLayers (temporal and speed attention)
    face_locator/   FaceLocator
    audio_proj/     AudioProjection
    speed_encoder/  SpeedEncoder

Each config holds the EMOConfig fields its part is built from (EMOConfig's names for emokit's classes,
diffusers' for the UNet and the VAE), so ``parts_config`` reassembles the exact EMOConfig. Reference-
attention (attention processors) and the temporal modules (forward hooks) are not in any file: they
are installed again on every joined model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from emokit.models.attention import install_reference_attention
from emokit.models.audio_proj import AudioProjection
from emokit.models.config import ConfigError, EMOConfig
from emokit.models.emo import EMOModel
from emokit.models.face_locator import FaceLocator
from emokit.models.pixel_latent import PixelLatent
from emokit.models.pretrained import CheckpointError
from emokit.models.speed import SpeedEncoder
from emokit.models.temporal import TemporalLayers

RAW_VARIANT = "raw"  # a finished stage's raw training weights, next to the EMA ones (the default files)
COMPONENTS = ("vae", "reference_net", "backbone", "face_locator", "audio_proj", "speed_encoder")
VAE_CLASSES: dict[str, type[ModelMixin]] = {"AutoencoderKL": AutoencoderKL, "PixelLatent": PixelLatent}
_D = EMOConfig()


class EMOBackbone(ModelMixin, ConfigMixin):
    """The denoising UNet with everything EMO adds inside it: temporal modules and speed attention
    (``temporal``); the audio-attention is the UNet's own cross-attention (attn2). The arguments are
    the EMOConfig fields it is built from (``EMOConfig.BACKBONE_FIELDS``).

    It has no ``forward`` of its own: the UNet runs inside ``EMOModel``, which makes the reference
    features, motion frames and speed tokens visible to its processors and hooks.
    """

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = _D.block_out_channels,
        down_block_types: tuple[str, ...] = _D.down_block_types,
        up_block_types: tuple[str, ...] = _D.up_block_types,
        layers_per_block: int = _D.layers_per_block,
        cross_attention_dim: int = _D.cross_attention_dim,
        attention_head_dim: int = _D.attention_head_dim,
        norm_num_groups: int = _D.norm_num_groups,
        sample_size: int = _D.sample_size,
        latent_channels: int = _D.latent_channels,
        temporal_heads: int = _D.temporal_heads,
        temporal_norm_groups: int = _D.temporal_norm_groups,
        temporal_max_frames: int = _D.temporal_max_frames,
        temporal_mid: bool = _D.temporal_mid,
        speed_dim: int = _D.speed_dim,
    ) -> None:
        super().__init__()
        fields = {k: v for k, v in locals().items() if k in EMOConfig.BACKBONE_FIELDS}
        config = EMOConfig.from_dict(fields)
        self.unet = UNet2DConditionModel(**config.unet_kwargs())
        self.temporal = TemporalLayers(self.unet, config)


def split_model(model: EMOModel) -> dict[str, ModelMixin]:
    """The model's parts as diffusers models, keyed by ``COMPONENTS``; they hold the model's own
    modules (no copy), so saving them saves the model as it is."""
    cfg = model.config
    with torch.device("meta"):  # only the config: the modules are replaced by the model's
        backbone = EMOBackbone(**cfg.fields_of(cfg.BACKBONE_FIELDS))
    backbone.unet, backbone.temporal = model.backbone, model.temporal
    return {
        "vae": model.vae,
        "reference_net": model.reference_net,
        "backbone": backbone,
        "face_locator": model.face_locator,
        "audio_proj": model.audio_proj,
        "speed_encoder": model.speed_encoder,
    }


def part_of(parameter_name: str) -> str:
    """The component an EMOModel parameter name belongs to (``temporal.*`` lives in the backbone)."""
    attr = parameter_name.split(".", 1)[0]
    return "backbone" if attr in ("backbone", "temporal") else attr


def parts_config(configs: dict[str, dict[str, Any]]) -> EMOConfig:
    """The EMOConfig of a set of part configs (``config.json`` dicts keyed by component, the VAE's
    ``_class_name`` telling the latent kind); CheckpointError when they do not fit together."""
    missing = [name for name in COMPONENTS if name not in configs]
    if missing:
        raise CheckpointError(f"parts missing: {', '.join(missing)}")
    fields: dict[str, Any] = {}
    for name, names in (
        ("backbone", EMOConfig.BACKBONE_FIELDS),
        ("face_locator", EMOConfig.FACE_LOCATOR_FIELDS),
        ("audio_proj", EMOConfig.AUDIO_PROJ_FIELDS),
        ("speed_encoder", EMOConfig.SPEED_ENCODER_FIELDS),
    ):
        for key in names:
            if key not in configs[name]:
                raise CheckpointError(f"{name}/config.json lacks {key!r}")
            value = _plain(configs[name][key])
            if key in fields and fields[key] != value:
                raise CheckpointError(f"{name} has {key}={value!r} but another part has {fields[key]!r}")
            fields[key] = value
    vae, kind = configs["vae"], configs["vae"].get("_class_name")
    if kind == "PixelLatent":
        fields.update(latent="pixel", pixel_patch=vae["patch"], vae_scaling_factor=vae["scale"])
    elif kind == "AutoencoderKL":
        fields.update(
            latent="kl",
            vae_block_out_channels=_plain(vae["block_out_channels"]),
            vae_layers_per_block=vae["layers_per_block"],
            vae_norm_num_groups=vae["norm_num_groups"],
            vae_scaling_factor=vae["scaling_factor"],
        )
    else:
        raise CheckpointError(f"vae must be one of {', '.join(VAE_CLASSES)}, got {kind!r}")
    try:
        config = EMOConfig.from_dict(fields)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"the parts do not make an EMOConfig ({e})") from None
    _check_fits(configs["reference_net"], config.unet_kwargs(), "reference_net")
    if config.latent == "kl":
        _check_fits(vae, config.vae_kwargs(), "vae")
    return config


def join_parts(parts: dict[str, ModelMixin]) -> EMOModel:
    """An EMOModel made of ``parts`` (``split_model``'s keys), holding their modules, with
    reference-attention and the temporal hooks installed on them. Tensors are moved into
    torch-allocated memory first (``from_pretrained`` leaves them at file offsets)."""
    config = parts_config({name: _config_of(part) for name, part in parts.items()})
    for part in parts.values():
        _own_memory(part)
    with torch.device("meta"):  # the modules are replaced by the parts right away
        model = EMOModel(config)
    backbone = parts["backbone"]
    model.vae = parts["vae"]
    model.vae.requires_grad_(False)
    model.backbone, model.temporal = backbone.unet, backbone.temporal
    model.reference_net = parts["reference_net"]
    model.face_locator = parts["face_locator"]
    model.audio_proj = parts["audio_proj"]
    model.speed_encoder = parts["speed_encoder"]
    install_reference_attention(model.backbone, model.reference_net, model._slot)
    model.temporal.attach(model.backbone, model.reference_net, model._slot)
    return model


def save_parts(model: EMOModel, directory: str | Path, variant: str | None = None) -> Path:
    """Every component folder of ``model`` under ``directory`` (``variant``: diffusers' weight-file
    suffix, e.g. ``diffusion_pytorch_model.raw.safetensors``)."""
    directory = Path(directory)
    for name, part in split_model(model).items():
        part.save_pretrained(directory / name, variant=variant)
    return directory


def part_class(directory: str | Path, name: str) -> type[ModelMixin]:
    """The class that loads component ``name`` of a pipeline folder."""
    if name == "vae":
        path = Path(directory) / name / "config.json"
        kind = _read_json(path).get("_class_name")
        if kind not in VAE_CLASSES:
            raise CheckpointError(f"{path}: vae must be one of {', '.join(VAE_CLASSES)}, got {kind!r}")
        return VAE_CLASSES[kind]
    classes: dict[str, type[ModelMixin]] = {
        "reference_net": UNet2DConditionModel,
        "backbone": EMOBackbone,
        "face_locator": FaceLocator,
        "audio_proj": AudioProjection,
        "speed_encoder": SpeedEncoder,
    }
    return classes[name]


def read_parts_config(directory: str | Path) -> EMOConfig:
    """The EMOConfig of a pipeline folder from its config files alone (no tensors read)."""
    directory = Path(directory)
    return parts_config({name: _read_json(directory / name / "config.json") for name in COMPONENTS})


def load_parts(directory: str | Path, variant: str | None = None) -> EMOModel:
    """The EMOModel of a pipeline folder, each part through its diffusers ``from_pretrained``;
    ``variant`` loads those weight files where a part has them (the others are shared)."""
    directory = Path(directory)
    parts: dict[str, ModelMixin] = {}
    for name in COMPONENTS:
        folder = directory / name
        own = variant if variant is not None and (folder / weights_file(variant)).is_file() else None
        try:
            part = part_class(directory, name).from_pretrained(folder, variant=own)
        except (OSError, ValueError) as e:
            reason = " ".join(str(e).split())[:300] or type(e).__name__
            raise CheckpointError(f"{folder}: cannot load {name} ({reason})") from None
        parts[name] = part
    return join_parts(parts)


def weights_file(variant: str | None = None) -> str:
    """diffusers' weight-file name of one component folder."""
    return f"diffusion_pytorch_model{'' if variant is None else '.' + variant}.safetensors"


def _own_memory(module: torch.nn.Module) -> None:
    """Move every tensor into torch-allocated memory (see ``pretrained.load_tensors``: tensors at
    a file's offsets made MKL round differently)."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.data = t.data.clone()


def _config_of(part: ModelMixin) -> dict[str, Any]:
    return {**dict(part.config), "_class_name": type(part).__name__}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found (not an EMOPipeline folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from None


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _check_fits(loaded: dict[str, Any], wanted: dict[str, Any], name: str) -> None:
    bad = [f"{k}={_plain(loaded.get(k))!r}" for k, v in wanted.items() if _plain(loaded.get(k)) != _plain(v)]
    if bad:
        raise CheckpointError(f"{name} does not fit the backbone: {'; '.join(bad)}")
