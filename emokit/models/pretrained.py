"""EMOModel files: our own checkpoints, and initialisation from SD1.5 / AnimateDiff weights.

A checkpoint folder holds ``model.safetensors`` (every tensor of the model) and ``config.json``
(the EMOConfig); each file is written atomically, weights first, so a killed save leaves complete
files and a reload either sees the old or the new weights — never a partial file.

``from_sd15`` never falls back to random weights: a folder or hub id that cannot be loaded (e.g.
offline without a cache) raises ``InitWeightsError`` naming the ``--init`` flag.

MotionAdapter mapping (diffusers AnimateDiff format → our temporal modules):
    down_blocks.{i}.motion_modules.{j}.*  →  temporal.down_{i}_{j}.motion.*
    mid_block.motion_modules.0.*          →  temporal.mid_0.motion.*
    up_blocks.{i}.motion_modules.{j}.*    →  temporal.up_{i}_{j}.motion.*
Tensors map where the name and shape match (norm, proj_in, both temporal self-attentions, the
feed-forward, proj_out and, at equal length, the sinusoidal position table); the speed layers are
EMO's own and keep their zero-initialised output.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from emokit.data.atomic import atomic_path
from emokit.models.config import EMOConfig

if TYPE_CHECKING:
    from emokit.models.emo import EMOModel

    M = TypeVar("M", bound=EMOModel)

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "emokit.EMOModel"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A folder that is not a loadable EMOModel checkpoint."""


class InitWeightsError(ValueError):
    """Pretrained (SD1.5 / MotionAdapter) weights that cannot be loaded or do not fit the preset."""


def save_model(model: EMOModel, directory: str | Path) -> Path:
    """Write weights then config, each through ``atomic_path``."""
    directory = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "emokit": FORMAT})
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict()}
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_config(directory: str | Path) -> EMOConfig:
    """The EMOConfig of a checkpoint folder (cheap: no tensors read)."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise CheckpointError(
            f"{directory}: not an EMOModel checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} v{meta.get('version')!r} "
            f"is not {FORMAT} v{FORMAT_VERSION}"
        )
    return EMOConfig.from_dict(meta["config"])


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, each in its own torch-allocated (64-byte aligned) memory.

    ``safetensors.torch.load_file`` hands out tensors at the file's byte offsets, often only 4-byte
    aligned. MKL's sgemm rounds differently by operand alignment on some of its code paths (the
    SSE4.2/AVX paths it takes on many non-Intel CPUs): weights loaded that way made a resumed run
    drift from an uninterrupted one by 1-ulp steps. Copying one tensor at a time keeps the extra
    memory to the largest tensor.
    """
    state = load_file(str(path))
    for name in list(state):
        state[name] = state[name].clone()
    return state


def load_model(cls: type[M], directory: str | Path) -> M:
    """Build on the meta device (no throw-away random init) and assign the saved tensors."""
    config = read_config(directory)
    state = load_tensors(Path(directory) / WEIGHTS_NAME)
    with torch.device("meta"):
        model = cls(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: weights do not match config.json ({len(missing)} "
            f"missing e.g. {missing[:1]}, {len(unexpected)} unexpected e.g. "
            f"{unexpected[:1]})"
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{directory}: weights do not match config.json ({reason})") from None
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{directory}: {len(left)} tensors not in the file, e.g. {left[0]}")
    return model


def _load_diffusers(kind: Any, path: str | Path, subfolder: str | None, flag: str):
    try:
        return kind.from_pretrained(str(path), subfolder=subfolder)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InitWeightsError(
            f"cannot load {kind.__name__} from {str(path)!r}/{subfolder} ({reason}); pass {flag} "
            f"a local diffusers folder (or a hub id that is cached when offline)"
        ) from None


def _check_layout(loaded: dict, wanted: dict, path: str | Path, what: str) -> None:
    """Every architecture field must agree (``sample_size`` is nominal and may differ)."""
    bad = []
    for key, want in wanted.items():
        have = loaded.get(key)
        if isinstance(want, tuple):
            have = tuple(have) if isinstance(have, list | tuple) else have
        if key in loaded and key != "sample_size" and have != want:
            bad.append(f"{key}={have!r} (preset: {want!r})")
    if bad:
        raise InitWeightsError(f"--init {path}: {what} does not fit the preset: {'; '.join(bad)}")


def init_from_sd15(
    cls: type[M], path: str | Path, config: EMOConfig, motion_adapter: str | Path | None = None
) -> M:
    """Backbone and ReferenceNet both start from the SD1.5 UNet; the VAE is SD1.5's."""
    if config.latent != "kl":
        raise InitWeightsError(
            f"--init {path}: an SD1.5 folder needs a preset with the KL VAE, not latent={config.latent!r}"
        )
    unet = _load_diffusers(UNet2DConditionModel, path, "unet", "--init")
    vae = _load_diffusers(AutoencoderKL, path, "vae", "--init")
    _check_layout(dict(unet.config), config.unet_kwargs(), path, "unet")
    _check_layout(dict(vae.config), config.vae_kwargs(), path, "vae")
    model = cls(config)
    unet_state = unet.state_dict()
    model.backbone.load_state_dict(unet_state)
    model.reference_net.load_state_dict(unet_state)
    model.vae.load_state_dict(vae.state_dict())
    del unet, vae, unet_state
    if motion_adapter is not None:
        load_motion_adapter(model, motion_adapter)
    return model


@dataclass(frozen=True)
class MotionLoad:
    """What a MotionAdapter contributed: tensors copied and adapter keys left out."""

    mapped: int
    skipped: tuple[str, ...]


_MOTION_KEY = re.compile(r"^(down|up)_blocks\.(\d+)\.motion_modules\.(\d+)\.(.+)$")
_MID_KEY = re.compile(r"^mid_block\.motion_modules\.(\d+)\.(.+)$")


def motion_adapter_key(key: str) -> str | None:
    """Our temporal state-dict name for a MotionAdapter key (None when it has no counterpart)."""
    if m := _MOTION_KEY.match(key):
        return f"{m[1]}_{m[2]}_{m[3]}.motion.{m[4]}"
    if (m := _MID_KEY.match(key)) and m[1] == "0":
        return f"mid_0.motion.{m[2]}"
    return None


def load_motion_adapter(model: EMOModel, path: str | Path) -> MotionLoad:
    """Copy matching AnimateDiff temporal weights into ``model.temporal`` (in place)."""
    adapter = _load_diffusers(MotionAdapter, path, None, "--motion-adapter")
    target = model.temporal.state_dict()
    mapped, skipped = 0, []
    for key, value in adapter.state_dict().items():
        name = motion_adapter_key(key)
        if name is not None and name in target and target[name].shape == value.shape:
            target[name] = value.to(target[name].dtype)
            mapped += 1
        else:
            skipped.append(key)
    if not mapped:
        raise InitWeightsError(f"--motion-adapter {path}: no tensor fits this preset's temporal modules")
    model.temporal.load_state_dict(target)
    log.info("motion adapter %s: %d tensors mapped, %d skipped", path, mapped, len(skipped))
    return MotionLoad(mapped, tuple(skipped))
