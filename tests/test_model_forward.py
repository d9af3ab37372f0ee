"""EMOModel forward behaviour on the tiny preset: shapes, reference/audio/speed/temporal paths."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emokit.models import EMOConfig, EMOModel, InputShapeError
from emokit.models.stages import group_parameters, open_audio_path

CFG = EMOConfig.tiny()
B, F, N, H = 2, 3, 4, 8  # clips, frames, motion frames, latent side (64 px)


def wake(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Give zero-initialised layers random weights so their effect becomes visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def portrait_latents(model: EMOModel, paths: list[Path]) -> torch.Tensor:
    """Real portraits → 64 px → tiny-VAE latents [len(paths), 4, 8, 8]."""
    pixels = []
    for path in paths:
        img = Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)
        pixels.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0)
    with torch.no_grad():
        return model.encode(torch.stack(pixels))


@pytest.fixture()
def model() -> EMOModel:
    torch.manual_seed(0)
    return EMOModel(CFG).eval()


@pytest.fixture()
def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(B, 1, 64, 64)
    mask[:, :, 12:52, 16:48] = 1.0
    return {
        "noisy": torch.randn(B, F, 4, H, H, generator=g),
        "timesteps": torch.tensor([10, 700]),
        "audio": torch.randn(B, F, CFG.audio_layers, CFG.audio_dim, generator=g),
        "face_mask": mask,
        "speed": torch.rand(B, F, generator=g) * 3.0,
        "motion": torch.randn(B, N, 4, H, H, generator=g),
        "ref": torch.randn(B, 4, H, H, generator=g),
    }


def run(model: EMOModel, x: dict[str, torch.Tensor], **kw: object) -> torch.Tensor:
    args = {"audio": x["audio"], "face_mask": x["face_mask"], "speed": x["speed"]} | kw
    with torch.no_grad():
        ref = args.pop("ref", None)
        ref = model.reference(x["ref"], x["motion"]) if ref is None else ref
        return model(x["noisy"], x["timesteps"], ref, **args)


def test_shapes_with_motion_frames_and_backward(model: EMOModel, inputs: dict) -> None:
    model.train()
    ref = model.reference(inputs["ref"], inputs["motion"])
    assert ref.motion_frames == N and ref.batch == B
    assert all(v.shape[0] == B * N for v in ref.motion.values())
    out = model(
        inputs["noisy"], inputs["timesteps"], ref, inputs["audio"], inputs["face_mask"], inputs["speed"]
    )
    assert out.shape == (B, F, 4, H, H) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert model.reference_net.conv_in.weight.grad.abs().sum() > 0  # reference path is in the graph
    assert model.vae.encoder.conv_in.weight.grad is None


def test_motion_latents_in_forward_equal_motion_in_reference(model: EMOModel, inputs: dict) -> None:
    wake(model.temporal)
    a = run(model, inputs)
    b = run(model, inputs, ref=model.reference(inputs["ref"]), motion_latents=inputs["motion"])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = run(model, inputs, ref=inputs["ref"], motion_latents=inputs["motion"])  # one-call training
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputShapeError, match="twice"):
        run(model, inputs, motion_latents=inputs["motion"])


def test_motion_frames_reach_the_clip_through_temporal_attention(model: EMOModel, inputs) -> None:
    assert torch.equal(run(model, inputs), run(model, inputs | {"motion": -inputs["motion"]}))
    wake(model.temporal)
    assert not torch.allclose(run(model, inputs), run(model, inputs | {"motion": -inputs["motion"]}))


def test_reference_attention_is_live(model: EMOModel, inputs: dict, portraits: Path) -> None:
    refs = portrait_latents(model, [portraits / "woman_frontal.jpg", portraits / "man_frontal.jpg"])
    a = run(model, inputs | {"ref": refs})
    b = run(model, inputs | {"ref": refs.flip(0)})
    assert (a - b).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-4  # each sample follows its reference


def test_drop_reference_cuts_only_the_dropped_samples(model, inputs, portraits: Path) -> None:
    refs = portrait_latents(model, [portraits / "woman_frontal.jpg", portraits / "man_frontal.jpg"])
    drop = torch.tensor([True, False])
    a = run(model, inputs | {"ref": refs}, drop_reference=drop)
    b = run(model, inputs | {"ref": refs.flip(0)}, drop_reference=drop)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)  # dropped: reference ignored
    assert (a[1] - b[1]).abs().max() > 1e-4
    assert (run(model, inputs | {"ref": refs}) - a)[0].abs().max() > 1e-4  # the flag acts


def test_drop_audio_equals_no_audio_and_changes_output(model: EMOModel, inputs: dict) -> None:
    wake(model.audio_proj)
    full = run(model, inputs)
    dropped = run(model, inputs, drop_audio=torch.tensor([False, True]))
    silent = run(model, inputs, audio=None)
    torch.testing.assert_close(dropped[1], silent[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dropped[0], full[0], rtol=1e-5, atol=1e-6)
    assert (dropped[1] - full[1]).abs().max() > 1e-4


def test_video_model_equals_image_model_at_init(model: EMOModel, inputs: dict) -> None:
    wake(model.audio_proj)  # audio tokens non-zero; constant over frames keeps the windows equal
    x = inputs | {"audio": inputs["audio"][:, :1].expand(-1, F, -1, -1).contiguous()}
    video = run(model, x)
    ref_only = model.reference(x["ref"])

    def image_frame(i: int) -> torch.Tensor:
        one = x | {"noisy": x["noisy"][:, i : i + 1], "audio": x["audio"][:, i : i + 1]}
        return run(model, one, ref=ref_only, speed=None)[:, 0]

    for i in range(F):
        torch.testing.assert_close(video[:, i], image_frame(i), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # speed layers alone: equal while zero, different once they act
        for layer in model.temporal.values():
            layer.speed.attn.to_out[0].weight.normal_(0, 0.2)
    assert (run(model, x)[:, 0] - image_frame(0)).abs().max() > 1e-4


def test_speed_changes_output_once_speed_layers_act(model: EMOModel, inputs: dict) -> None:
    assert torch.equal(run(model, inputs), run(model, inputs, speed=inputs["speed"] + 2.0))
    wake(model.temporal)
    assert not torch.allclose(run(model, inputs), run(model, inputs, speed=inputs["speed"] + 2.0))


def test_face_locator_mask_moves_output_once_trained(model: EMOModel, inputs: dict) -> None:
    moved = inputs | {"face_mask": inputs["face_mask"].roll(16, dims=3)}
    assert torch.equal(run(model, inputs), run(model, moved))  # zero-initialised last conv
    wake(model.face_locator)
    assert not torch.allclose(run(model, inputs), run(model, moved))


def test_gradient_checkpointing_gives_the_same_gradients(model: EMOModel, inputs: dict) -> None:
    wake(model.temporal)
    model.train()

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        ref = model.reference(inputs["ref"], inputs["motion"])
        out = model(
            inputs["noisy"],
            inputs["timesteps"],
            ref,
            inputs["audio"],
            inputs["face_mask"],
            inputs["speed"],
            drop_reference=torch.tensor([False, True]),
        )
        out.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.backbone.down_blocks[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 100
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_deepcopy_is_an_independent_model(model: EMOModel, inputs: dict) -> None:
    ema = copy.deepcopy(model)  # how EMA copies are made: hooks/processors must follow the copy
    before = run(model, inputs)
    torch.testing.assert_close(run(ema, inputs), before, rtol=0, atol=0)
    wake(ema.temporal)
    assert torch.equal(run(model, inputs), before)
    assert not torch.allclose(run(ema, inputs), before)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"face_mask": torch.zeros(B, 1, 32, 32)}, "face_mask"),
        ({"audio": torch.zeros(B, F, 5, CFG.audio_dim)}, "audio must be"),
        ({"speed": torch.zeros(B, F + 1)}, "speed"),
        ({"noisy": torch.zeros(B, 40, 4, H, H)}, "temporal_max_frames"),
        ({"drop_reference": torch.tensor([True])}, "drop_reference"),
    ],
)
def test_bad_inputs_raise_one_line_errors(model, inputs, change: dict, message: str) -> None:
    ref = model.reference(inputs["ref"], inputs["motion"])
    args = {
        "noisy": inputs["noisy"],
        "timesteps": inputs["timesteps"],
        "ref": ref,
        "audio": inputs["audio"],
        "face_mask": inputs["face_mask"],
    } | change
    if args["noisy"].shape[1] != F:
        args["audio"] = None
    with pytest.raises(ValueError, match=message) as err:
        model(**args)
    assert "\n" not in str(err.value)


def test_vae_round_trip_shapes_on_real_portraits(model: EMOModel, portraits: Path) -> None:
    paths = [portraits / "woman_frontal.jpg", portraits / "man_three_quarter_turn.png"]
    latents = portrait_latents(model, paths)
    assert latents.shape == (2, 4, H, H)
    with torch.no_grad():
        pixels = model.decode(latents)
        sampled = model.encode(model.decode(latents), generator=torch.Generator().manual_seed(0))
    assert pixels.shape == (2, 3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert sampled.shape == latents.shape and not torch.equal(sampled, model.encode(pixels))


def test_repeated_reference_features_serve_a_cfg_batch(model: EMOModel, inputs: dict) -> None:
    wake(model.temporal)
    one = {k: v[:1] for k, v in inputs.items()}
    with torch.no_grad():
        ref = model.reference(one["ref"], one["motion"]).repeat(2)
    assert ref.batch == 2 and ref.motion_frames == N
    pair = {k: torch.cat([v, v]) for k, v in one.items()}
    out = run(model, pair, ref=ref, drop_reference=torch.tensor([False, True]))
    torch.testing.assert_close(out[:1], run(model, one), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out[1:], run(model, one, drop_reference=torch.tensor([True])), rtol=1e-5, atol=1e-5
    )


def _audio_grads(model: EMOModel, x: dict) -> dict[str, float]:
    """|grad| summed per kind of audio parameter after one backward pass in stage 2."""
    model.set_stage(2)
    model.train()
    model.zero_grad(set_to_none=True)
    ref = model.reference(x["ref"], x["motion"])
    model(x["noisy"], x["timesteps"], ref, x["audio"], x["face_mask"], x["speed"]).square().mean().backward()
    sums: dict[str, float] = {}
    kinds = {"mlp.0.": "proj_first", "mlp.4.": "proj_last", "attn2.to_out.0.weight": "out", "attn2.to_k": "k"}
    params = [*group_parameters(model, "audio_proj"), *group_parameters(model, "backbone.audio_attention")]
    for name, p in params:
        for key, kind in kinds.items():
            if key in name and p.grad is not None:
                sums[kind] = sums.get(kind, 0.0) + float(p.grad.abs().sum())
    return sums


def test_zero_output_audio_start_keeps_the_output_and_trains_a_read_out_first(
    model: EMOModel, inputs: dict
) -> None:
    """Stage 2's two ways to open the audio path (TrainConfig.audio_start) both start from the
    stage-1 model's output exactly; they differ in which layer the first gradient reaches."""
    null = run(model, inputs, audio=None)
    assert torch.equal(run(model, inputs), null)  # zero tokens: the audio does nothing yet
    zero_tokens = _audio_grads(copy.deepcopy(model), inputs)
    # only the projection's last layer learns at the first step: zero tokens give zero keys and
    # values, so attention is uniform and nothing upstream or in attn2 gets a gradient
    assert zero_tokens["proj_last"] > 0
    assert zero_tokens["proj_first"] == zero_tokens["out"] == zero_tokens["k"] == 0.0

    open_audio_path(model, seed=0)
    assert model.audio_proj(inputs["audio"]).abs().mean() > 0.05  # the tokens start non-zero
    assert torch.equal(run(model, inputs), null)  # and the output is still the stage-1 model's
    assert torch.equal(run(model, inputs, audio=None), null)
    zero_output = _audio_grads(model, inputs)
    # the attention read-out learns first: its input is already audio-dependent
    assert zero_output["out"] > 0
    assert zero_output["proj_first"] == zero_output["proj_last"] == zero_output["k"] == 0.0
    # drawn from the seed: two starts with the same seed are the same
    again = copy.deepcopy(model)
    open_audio_path(again, seed=0)
    assert torch.equal(again.audio_proj.mlp[4].weight, model.audio_proj.mlp[4].weight)
