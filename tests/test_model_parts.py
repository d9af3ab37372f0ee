"""EMO model parts on their own: config, frame windows, speed code, audio projection, face locator."""

from __future__ import annotations

import json
import math

import pytest
import torch

from emokit.models import ConfigError, EMOConfig, speed_encoding
from emokit.models.audio_proj import AudioProjection
from emokit.models.face_locator import FaceLocator
from emokit.models.speed import SpeedEncoder
from emokit.models.window import frame_window

CFG = EMOConfig.tiny()


@pytest.mark.parametrize("config", [EMOConfig.tiny(), EMOConfig.sd15()])
def test_config_round_trips_through_json(config: EMOConfig) -> None:
    again = EMOConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)


def test_config_rejects_unknown_keys_and_inconsistent_fields() -> None:
    with pytest.raises(ConfigError, match="audio_tokns"):
        EMOConfig.from_dict(CFG.to_dict() | {"audio_tokns": 3})
    with pytest.raises(ConfigError, match="speed_centres/speed_radii"):
        EMOConfig.from_dict(CFG.to_dict() | {"speed_radii": [1.0]})
    with pytest.raises(ConfigError, match="face_locator_channels"):
        EMOConfig.from_dict(CFG.to_dict() | {"face_locator_channels": [4, 8]})


def test_sd15_preset_is_the_sd15_unet_layout() -> None:
    kw = EMOConfig.sd15().unet_kwargs()
    assert kw["block_out_channels"] == (320, 640, 1280, 1280)
    assert (kw["layers_per_block"], kw["cross_attention_dim"], kw["attention_head_dim"]) == (2, 768, 8)
    assert (kw["sample_size"], kw["in_channels"], kw["out_channels"]) == (64, 4, 4)
    assert EMOConfig.sd15().vae_factor == 8 and CFG.vae_factor == 8


def test_frame_window_is_edge_padded() -> None:
    x = torch.arange(5.0)[None, :, None]  # [1, f=5, 1]
    w = frame_window(x, 2)[0, :, :, 0]
    assert w.tolist() == [
        [0, 0, 0, 1, 2],
        [0, 0, 1, 2, 3],
        [0, 1, 2, 3, 4],
        [1, 2, 3, 4, 4],
        [2, 3, 4, 4, 4],
    ]


def test_speed_encoding_matches_the_formula() -> None:
    centres, radii = (0.0, 0.5, 1.5, 4.0), (0.5, 0.25, 1.0, 2.0)
    speeds = [0.0, 0.3, 0.5, 1.2, 2.75, 9.0]
    got = speed_encoding(
        torch.tensor(speeds, dtype=torch.float64),
        torch.tensor(centres, dtype=torch.float64),
        torch.tensor(radii, dtype=torch.float64),
    )
    want = [[math.tanh((v - c) / r * 3) for c, r in zip(centres, radii)] for v in speeds]
    assert got.shape == (len(speeds), len(centres))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    assert got[2, 1] == 0.0 and got[0, 0] == 0.0  # v = c_k gives 0
    assert got[5].min() > 0.99 and got[0, 3] < -0.99  # saturates far from the centre


def test_speed_encoder_uses_the_formula_and_a_two_frame_window() -> None:
    torch.manual_seed(0)
    enc = SpeedEncoder(**CFG.fields_of(CFG.SPEED_ENCODER_FIELDS))
    speed = torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0, 0.2, 0.1]])
    codes = speed_encoding(speed, torch.tensor(CFG.speed_centres), torch.tensor(CFG.speed_radii))
    window = frame_window(codes, 2).flatten(2)
    want = enc.mlp(window).reshape(1, 7, CFG.speed_tokens, CFG.speed_dim)
    tokens = enc(speed)
    torch.testing.assert_close(tokens, want)
    bumped = enc(speed.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(2.5)))
    changed = (bumped - tokens).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [True, True, True, False, False, False, False]


def test_audio_projection_windows_layers_and_drops() -> None:
    torch.manual_seed(0)
    proj = AudioProjection(**CFG.fields_of(CFG.AUDIO_PROJ_FIELDS))
    audio = torch.randn(2, 6, CFG.audio_layers, CFG.audio_dim).half()  # wav2vec rows are float16
    assert proj(audio).abs().max() == 0  # starts as the "no audio" tokens
    with torch.no_grad():
        proj.mlp[-1].weight.normal_()
    tokens = proj(audio, drop=torch.tensor([False, True]))
    assert tokens.shape == (2, 6, CFG.audio_tokens, CFG.cross_attention_dim)
    assert tokens[0].abs().min() > 0 and tokens[1].abs().max() == 0
    bumped = audio.clone()
    bumped[0, 5] += 1
    changed = (proj(bumped) - proj(audio))[0].abs().amax(dim=(1, 2)) > 0
    assert changed.tolist() == [False, False, False, True, True, True]
    with pytest.raises(ValueError, match=r"audio must be \[b, f, 2, 16\]"):
        proj(torch.zeros(2, 6, 13, CFG.audio_dim))


def test_face_locator_maps_a_pixel_mask_to_the_latent_grid() -> None:
    torch.manual_seed(0)
    loc = FaceLocator(**CFG.fields_of(CFG.FACE_LOCATOR_FIELDS))
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:40, 24:56] = 1.0
    out = loc(mask)
    assert out.shape == (1, CFG.latent_channels, 8, 8) and out.abs().max() == 0
    with torch.no_grad():
        loc.encoder.conv_out.weight.normal_()
    moved = loc(mask.roll(-24, dims=3))
    assert (loc(mask) - moved).abs().max() > 0
