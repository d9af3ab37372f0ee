"""Model files: SD1.5 / MotionAdapter initialisation and save/from_pretrained round trips.

No weights can be downloaded here, so diffusers-format folders are made from tiny random models
with ``save_pretrained`` and loaded back through the real loading code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel

from emokit.models import CheckpointError, EMOConfig, EMOModel, InitWeightsError, read_config

CFG = EMOConfig.tiny()


def wake(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers SD1.5-style folder (unet/ + vae/) holding tiny random weights."""
    root = tmp_path_factory.mktemp("sd15_tiny")
    torch.manual_seed(123)
    UNet2DConditionModel(**CFG.unet_kwargs()).save_pretrained(root / "unet")
    AutoencoderKL(**CFG.vae_kwargs()).save_pretrained(root / "vae")
    return root


def denoise(model: EMOModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    with torch.no_grad():
        ref = model.reference(torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 2, 4, 8, 8, generator=g))
        return model(
            torch.randn(1, 3, 4, 8, 8, generator=g),
            torch.tensor([300]),
            ref,
            torch.randn(1, 3, CFG.audio_layers, CFG.audio_dim, generator=g),
            mask,
            torch.tensor([[0.5, 1.0, 2.0]]),
        )


def test_from_sd15_loads_unet_twice_and_the_vae(sd_folder: Path) -> None:
    model = EMOModel.from_sd15(sd_folder, CFG)
    unet = UNet2DConditionModel.from_pretrained(sd_folder / "unet")
    vae = AutoencoderKL.from_pretrained(sd_folder / "vae")
    assert same_state(model.backbone, unet) and same_state(model.reference_net, unet)
    assert same_state(model.vae, vae)
    assert model.backbone.conv_in.weight.data_ptr() != model.reference_net.conv_in.weight.data_ptr()
    assert denoise(model).shape == (1, 3, 4, 8, 8)  # processors and hooks survive the load


def test_from_sd15_maps_a_motion_adapter(sd_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    adapter = MotionAdapter(
        block_out_channels=CFG.block_out_channels,
        motion_layers_per_block=1,
        motion_num_attention_heads=CFG.temporal_heads,
        motion_norm_num_groups=CFG.temporal_norm_groups,
    )
    adapter.save_pretrained(tmp_path / "motion")
    model = EMOModel.from_sd15(sd_folder, CFG, motion_adapter=tmp_path / "motion")
    ours = model.temporal.state_dict()
    for key, value in adapter.state_dict().items():
        site, rest = key.split(".motion_modules.")
        block, index = site.split(".") if "." in site else (site, "")
        j, tail = rest.split(".", 1)
        name = {"mid_block": f"mid_{j}"}.get(block, f"{block.split('_')[0]}_{index}_{j}")
        assert torch.equal(ours[f"{name}.motion.{tail}"], value), key
    assert all(v.abs().max() == 0 for k, v in ours.items() if ".speed.attn.to_out" in k)


def test_from_sd15_offline_or_missing_names_init(tmp_path: Path) -> None:
    for where in ("someone/not-cached-sd15", str(tmp_path / "nothing_here")):
        with pytest.raises(InitWeightsError, match="--init") as err:
            EMOModel.from_sd15(where, CFG)
        assert "\n" not in str(err.value)


def test_from_sd15_rejects_weights_of_another_layout(sd_folder: Path) -> None:
    with pytest.raises(InitWeightsError, match="--init .*unet does not fit.*block_out_channels"):
        EMOModel.from_sd15(sd_folder, EMOConfig.sd15())


def test_save_and_from_pretrained_give_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EMOModel(CFG).eval()
    wake(model.temporal)
    wake(model.audio_proj, seed=1)
    wake(model.face_locator, seed=2)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = EMOModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == CFG == read_config(tmp_path / "ckpt")
    assert same_state(loaded, model)
    assert not any(p.requires_grad for p in loaded.vae.parameters())
    assert torch.equal(denoise(loaded), denoise(model))
    wake(model.temporal, seed=3)  # overwriting a checkpoint replaces it whole
    model.save_pretrained(tmp_path / "ckpt")
    assert torch.equal(denoise(EMOModel.from_pretrained(tmp_path / "ckpt")), denoise(model))


def test_from_pretrained_rejects_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not an EMOModel checkpoint"):
        EMOModel.from_pretrained(tmp_path)
    torch.manual_seed(0)
    EMOModel(CFG).save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    meta["config"]["audio_tokens"] = 8  # a config that does not describe these tensors
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match config.json") as err:
        EMOModel.from_pretrained(tmp_path / "ckpt")
    assert "\n" not in str(err.value)
