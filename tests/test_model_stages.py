"""Per-stage trainable parameters and parameter counts (tiny, and sd15 on the meta device)."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter

from emokit.models import EMOConfig, EMOModel, StageError, count_parameters

# SD1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5) as diffusers reports it
SD15_UNET = 859_520_964
SD15_VAE = 83_653_863


def _audio_attention(name: str) -> bool:
    return ".transformer_blocks." in name and any(f".{k}." in name for k in ("attn2", "norm2"))


def _reference_tail(name: str) -> bool:
    """Tiny ReferenceNet layers after its last self-attention input (never reach the backbone)."""
    last = "reference_net.up_blocks.1.attentions.1."
    return (name.startswith(f"{last}transformer_blocks.0.") and ".norm1." not in name) or (
        name.startswith((f"{last}proj_out.", "reference_net.conv_norm_out.", "reference_net.conv_out."))
    )


def expected(name: str, stage: int) -> bool:
    """The paper's stages, written out independently of emokit.models.stages."""
    part = name.split(".")[0]
    speed = part == "temporal" and ".speed." in name
    if stage == 1:
        return (
            (part == "backbone" and not _audio_attention(name))
            or part == "face_locator"
            or (part == "reference_net" and not _reference_tail(name))
        )
    if stage == 2:
        return (
            (part == "temporal" and not speed)
            or part == "audio_proj"
            or (part == "backbone" and _audio_attention(name))
        )
    return part in ("temporal", "speed_encoder")


@pytest.fixture(scope="module")
def model() -> EMOModel:
    return EMOModel(EMOConfig.tiny())


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_set_stage_trains_exactly_the_papers_parameters(model: EMOModel, stage: int) -> None:
    params = model.set_stage(stage)
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable == {n for n in named if expected(n, stage)}
    assert {id(p) for p in params} == {id(named[n]) for n in trainable}
    assert len(params) == len(trainable)
    assert not any(n.startswith("vae.") for n in trainable)
    parts = {n.split(".")[0] for n in trainable}
    assert (
        parts
        == {
            1: {"backbone", "reference_net", "face_locator"},
            2: {"temporal", "backbone", "audio_proj"},
            3: {"temporal", "speed_encoder"},
        }[stage]
    )


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_trainable_parameter_gets_a_gradient(model: EMOModel, stage: int) -> None:
    """Stage inputs as the trainer gives them; no dead parameter (DDP needs none)."""
    params = model.set_stage(stage)
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(stage)
    b, f, n = (2, 1, 0) if stage == 1 else (2, 3, 2)
    motion = torch.randn(b, n, 4, 8, 8, generator=g) if n else None
    ref = model.reference(torch.randn(b, 4, 8, 8, generator=g), motion)
    speed = torch.rand(b, f, generator=g) if stage == 3 else None
    out = model(
        torch.randn(b, f, 4, 8, 8, generator=g),
        torch.tensor([3, 600]),
        ref,
        torch.randn(b, f, 2, 16, generator=g),
        torch.ones(b, 1, 64, 64),
        speed,
    )
    out.square().mean().backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_stage_groups_split_the_backbone_and_temporal_modules(model: EMOModel) -> None:
    names = dict(model.named_parameters())
    one = {n for n in names if expected(n, 1)}
    two = {n for n in names if expected(n, 2)}
    backbone = {n for n in names if n.startswith("backbone.")}
    assert backbone <= one | two and not (backbone & one & two)
    assert any(".attn2.to_k." in n for n in two) and any(".attn1.to_k." in n for n in one)
    assert any(".resnets.0.norm2." in n for n in one)  # resnet norm2 is spatial, not audio


def test_unknown_stage_is_rejected(model: EMOModel) -> None:
    with pytest.raises(StageError, match="stage must be one of"):
        model.set_stage(4)


def test_tiny_counts_add_up(model: EMOModel) -> None:
    counts = count_parameters(model)
    parts = ("vae", "backbone", "reference_net", "temporal", "face_locator", "audio_proj", "speed_encoder")
    assert sum(counts[p] for p in parts) == counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["backbone"] == counts["reference_net"]
    assert 0 < counts["temporal.speed"] < counts["temporal"]
    assert counts["total"] < 5_000_000


def test_sd15_builds_on_meta_with_real_sd15_counts() -> None:
    with torch.device("meta"):
        model = EMOModel(EMOConfig.sd15())
    assert all(p.is_meta for p in model.parameters())
    counts = count_parameters(model)
    print("sd15 parameter counts:", {k: f"{v / 1e6:.1f}M" for k, v in counts.items()})
    assert counts["backbone"] == counts["reference_net"] == SD15_UNET
    assert counts["vae"] == SD15_VAE
    # the temporal self-attention is exactly an AnimateDiff v2 MotionAdapter's worth of weights
    with torch.device("meta"):
        adapter = MotionAdapter()
    assert counts["temporal"] - counts["temporal.speed"] == sum(p.numel() for p in adapter.parameters())
    assert counts["total"] > 2 * SD15_UNET + SD15_VAE
