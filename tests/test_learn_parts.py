"""What the tiny-face learning recipe adds: the lossless pixel latent, the face/mouth-weighted loss,
the audio layers' own learning rate and the training time limit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from emokit.config import TrainConfig, load_recipe
from emokit.models import ConfigError, EMOConfig, EMOModel, InitWeightsError
from emokit.models.stages import group_parameters
from emokit.train.checkpoint import load_for_inference, read_info
from emokit.train.dataset import face_mask
from emokit.train.loop import AUDIO_GROUPS, _param_groups, train
from emokit.train.weighting import mouth_mask, region_weights, weighted_mse
from train_shards import build_dataset

FACE = dataclasses.replace(EMOConfig.tiny_face(), audio_layers=2, audio_dim=8)


def _pixels(path, side: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 127.5 - 1.0


def test_pixel_latent_round_trips_real_portraits_exactly(portraits):
    """Space-to-depth is a permutation (scale 1 here, and 2 is a power of two): bit-exact both
    ways on any CPU, so the tiny-face model sees and outputs real pixels, not a random VAE's."""
    model = EMOModel(FACE)
    x = torch.cat([_pixels(portraits / n, 64) for n in ("woman_frontal.jpg", "man_frontal.jpg")])
    z = model.encode(x, torch.Generator().manual_seed(0))  # a generator changes nothing: no noise
    assert z.shape == (2, 48, 16, 16)
    assert torch.equal(model.decode(z), x)
    # cell (i, j) holds exactly the 4x4 patch at (4i, 4j), channel-major
    assert torch.equal(z[0, :, 3, 5].reshape(3, 4, 4), x[0, :, 12:16, 20:24])
    assert sum(p.numel() for p in model.vae.parameters()) == 0
    doubled = EMOModel(dataclasses.replace(FACE, vae_scaling_factor=2.0))
    assert torch.equal(doubled.decode(doubled.encode(x)), x)


def test_pixel_latent_config_errors():
    with pytest.raises(ConfigError, match="latent_channels must be 3"):
        dataclasses.replace(FACE, latent_channels=4)
    with pytest.raises(ConfigError, match="latent must be"):
        dataclasses.replace(FACE, latent="vq")
    with pytest.raises(InitWeightsError, match="KL VAE"):
        EMOModel.from_sd15("/nonexistent", FACE)
    assert EMOConfig.sd15().latent == "kl" and EMOConfig.tiny().latent == "kl"


def test_mouth_region_and_weights_on_a_real_face_box():
    """The clip's face box of speaker_c (as label stores it) → mouth region inside its lower part."""
    box = (151.0, 101.0, 361.0, 371.0)  # x0, y0, x1, y1 in 512-px crop pixels
    mask = face_mask(box, 512, 64)[None]
    mouth = mouth_mask(mask)
    ys, xs = torch.nonzero(mouth[0, 0], as_tuple=True)
    fy, fx = torch.nonzero(mask[0, 0], as_tuple=True)
    assert mouth.sum() > 0 and (mouth <= mask).all()
    assert ys.min() > fy.float().mean() and ys.max() == fy.max()  # lower half, down to the chin
    assert abs(xs.float().mean() - fx.float().mean()) < 1.0  # centred
    w = region_weights(mask, (16, 16), face=2.0, mouth=6.0)
    assert w.shape == (1, 1, 16, 16) and w.min() == 1.0 and w.max() == 6.0
    ones = region_weights(mask, (16, 16), face=1.0, mouth=1.0)
    pred, target = torch.randn(1, 3, 48, 16, 16), torch.randn(1, 3, 48, 16, 16)
    assert torch.allclose(weighted_mse(pred, target, ones), F.mse_loss(pred, target))
    # an error only inside the mouth costs 6/mean(w) times what it costs unweighted
    err = torch.zeros_like(pred)
    err += (w[:, None] == 6.0).float()
    assert weighted_mse(err, torch.zeros_like(err), w) > 2 * F.mse_loss(err, torch.zeros_like(err))


def test_audio_layers_get_their_own_learning_rate():
    model = EMOModel(FACE)
    params = model.set_stage(2)
    cfg = TrainConfig(lr=1e-4, audio_lr_scale=3.0)
    groups = _param_groups(model, params, cfg)
    audio = {id(p) for g in AUDIO_GROUPS for _, p in group_parameters(model, g)}
    assert [g.get("lr") for g in groups] == [None, pytest.approx(3e-4)]
    assert {id(p) for p in groups[1]["params"]} == audio
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(params)
    assert _param_groups(model, params, TrainConfig()) == [{"params": params}]


def test_learn_recipe_and_time_limit(tmp_path, videos):
    """pipelines/learn.toml loads; a time limit ends the stage as finished at the step reached."""
    recipe = load_recipe(__import__("pathlib").Path(__file__).parents[1] / "pipelines" / "learn.toml")
    assert recipe.train.preset == "tiny-face" and recipe.train.mouth_loss_weight > 1
    dataset = build_dataset(tmp_path / "ds", videos / "speaker_c_25fps_512.mp4", 2, 8)
    cfg = dataclasses.replace(recipe.train, max_steps=1000, frames=4, motion_frames=2, log_every=5)
    r = train(dataset, tmp_path / "run", 1, cfg, workers=0, progress=False, time_limit_s=0.0)
    assert r.step == 1 and r.final is not None and len(r.losses) == 1
    info = read_info(r.final)
    assert info["finished"] and info["step"] == 1
    r2 = train(dataset, tmp_path / "run", 2, cfg, workers=0, progress=False, time_limit_s=0.0)
    assert r2.step == 1
    model = load_for_inference(tmp_path / "run")
    assert model.config.latent == "pixel" and model.config.sample_size * model.config.vae_factor == 64
    # audio_start: one AdamW step from the zero-token start leaves the projection's last layer
    # near zero (~lr); the zero-output start draws it at nn.Linear's init scale (1/sqrt(fan_in))
    for start in ("zero_tokens", "zero_output"):
        cfg2 = dataclasses.replace(cfg, audio_start=start)
        train(dataset, tmp_path / start, 1, cfg2, workers=0, progress=False, time_limit_s=0.0)
        train(dataset, tmp_path / start, 2, cfg2, workers=0, progress=False, time_limit_s=0.0)
        last = load_for_inference(tmp_path / start, ema=False).audio_proj.mlp[-1].weight
        big = last.abs().mean() > 0.2 * last.shape[1] ** -0.5
        assert big == (start == "zero_output"), (start, float(last.abs().mean()))
