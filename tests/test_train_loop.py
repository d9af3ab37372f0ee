"""The trainer end to end (tiny preset, CPU): stages 1 → 2 → 3, what trains, overfitting, errors."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from emokit.cli import app
from emokit.config import TrainConfig
from emokit.models import EMOConfig, EMOModel
from emokit.train.checkpoint import load_checkpoint_model, load_for_inference
from emokit.train.dataset import ClipDataset, index_clips
from emokit.train.ema import EMA
from emokit.train.loop import TrainError, train
from emokit.train.loss import DiffusionLoss
from emokit.train.noise import training_scheduler
from train_shards import build_dataset

L, D = 2, 8  # not the preset's audio size: a fresh model takes it from the shards
CFG = TrainConfig(
    max_steps=2,
    checkpoint_every=1,
    log_every=1,
    frames=4,
    motion_frames=2,
    lr=1e-3,
    cond_dropout=0.3,
    cond_drop_both=0.3,
    motion_dropout=0.5,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", L, D)


def _trainable_names(model: EMOModel, stage: int) -> set[str]:
    chosen = {id(p) for p in model.set_stage(stage)}
    return {n for n, p in model.named_parameters() if id(p) in chosen}


def test_three_stages_end_to_end(dataset, tmp_path):
    run, messages = tmp_path / "run", []
    with pytest.raises(TrainError, match="--stage 1 -o"):
        train(dataset, run, 2, CFG, workers=0, progress=False)
    with torch.random.fork_rng(devices=[]):  # stage 1 starts from the seeded random init
        torch.manual_seed(CFG.seed)
        start = EMOModel(dataclasses.replace(EMOConfig.tiny(), audio_layers=L, audio_dim=D))
    for stage in (1, 2, 3):
        r = train(dataset, run, stage, CFG, workers=0, progress=False, log=messages.append)
        sdir = run / f"stage{stage}"
        assert (r.start_step, r.step, r.already_finished) == (0, 2, False)
        assert r.final == sdir / "final"
        assert f"checkpoint step 1: {sdir / 'step-00000001'}" in messages  # written, then pruned
        assert sorted(p.name for p in sdir.iterdir()) == ["final", "log.csv"]
        with open(sdir / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(row["step"]) for row in rows] == [1, 2]
        assert all(math.isfinite(float(row["loss"])) for row in rows)
        # exactly the parameters the model names for this stage moved; everything else is intact
        end = load_checkpoint_model(r.final, ema=False)
        before = dict(start.named_parameters())
        changed = {n for n, p in end.named_parameters() if not torch.equal(p, before[n])}
        trainable = _trainable_names(end, stage)
        assert changed and changed <= trainable
        assert len(changed) > len(trainable) // 2
        start = load_for_inference(run)  # what stage k+1 starts from: stage k with EMA weights
        assert torch.equal(start.vae.encoder.conv_in.weight, end.vae.encoder.conv_in.weight)
    again = train(dataset, run, 3, CFG, workers=0, progress=False)
    assert again.already_finished and again.step == 2
    # a finished stage is not handed back under another recipe; how long and how often it logs may change
    longer = dataclasses.replace(CFG, max_steps=5, log_every=3, gradient_checkpointing=False)
    assert train(dataset, run, 3, longer, workers=0, progress=False).already_finished
    other = dataclasses.replace(CFG, lr=CFG.lr * 2, mouth_loss_weight=20.0)
    with pytest.raises(
        ValueError, match=r"trained with other settings \(lr .* → .*; mouth_loss_weight 1.0 → 20.0\)"
    ):
        train(dataset, run, 3, other, workers=0, progress=False)
    # the final folder is a pipeline: EMA weights by default, the raw ones as variant "raw" of the
    # components that have EMA parameters (stage 3: backbone with its temporal modules, speed encoder)
    final = run / "stage3" / "final"
    assert sorted(p.parent.name for p in final.glob("*/*.raw.safetensors")) == ["backbone", "speed_encoder"]
    raw = load_checkpoint_model(final, ema=False)
    from emokit.pipeline import EMOPipeline  # diffusers' own variant loading gives the same weights

    via_diffusers = EMOPipeline.from_pretrained(final, variant="raw").model.state_dict()
    assert all(torch.equal(via_diffusers[k], v) for k, v in raw.state_dict().items())
    params, raws = dict(load_for_inference(run).named_parameters()), dict(raw.named_parameters())
    differ = {n for n in params if not torch.equal(params[n], raws[n])}  # EMA moved them
    assert differ and differ <= _trainable_names(raw, 3)
    default = load_file(final / "speed_encoder" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(default["mlp.0.weight"], params["speed_encoder.mlp.0.weight"])
    assert not load_for_inference(run).training


def test_overfits_one_fixed_batch(dataset):
    """Same batch, same noise and timesteps every step: the loss must collapse."""
    clips, _ = index_clips(dataset, 1, 4, 2)
    ds = ClipDataset(clips, 1, 64, seed=0)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    torch.manual_seed(0)
    model = EMOModel(EMOConfig.tiny())
    names = _trainable_names(model, 1)
    named = [(n, p) for n, p in model.named_parameters() if n in names]
    net = DiffusionLoss(model, training_scheduler(), stage=1, cond_dropout=0.0)
    opt = torch.optim.AdamW([p for _, p in named], lr=1e-3)
    ema = EMA(named, decay=0.999)
    gen, losses = torch.Generator(), []
    for _ in range(8):
        gen.manual_seed(1)
        loss = net(batch, gen)
        loss.backward()
        opt.step()
        opt.zero_grad()
        ema.update()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    moved = [not torch.equal(s, p) for s, (_, p) in zip(ema.shadow, named)]
    assert any(moved) and ema.step_count == 8


def test_cli_errors_are_one_line(dataset, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(dataset), "--stage", "3", "-o", str(tmp_path / "run")])
    assert r.exit_code == 2 and "emokit train DATASET --stage 2" in r.output
    r = runner.invoke(app, ["train", str(tmp_path), "--stage", "1", "-o", str(tmp_path / "run")])
    assert r.exit_code == 2 and "no label shards" in r.output
    r = runner.invoke(
        app, ["train", str(dataset), "--stage", "1", "-o", str(tmp_path / "r"), "--preset", "huge"]
    )
    assert r.exit_code == 2 and "--preset must be one of" in r.output
    assert "Example: emokit train" in runner.invoke(app, ["train", "--help"]).output


def test_init_from_a_diffusers_sd15_folder(dataset, tmp_path):
    """--init goes through EMOModel.from_sd15: the run starts from the folder's UNet and VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tiny, sd = EMOConfig.tiny(), tmp_path / "sd15-tiny"
    torch.manual_seed(7)
    unet = UNet2DConditionModel(**tiny.unet_kwargs())
    vae = AutoencoderKL(**tiny.vae_kwargs())
    unet.save_pretrained(sd / "unet")
    vae.save_pretrained(sd / "vae")
    cfg = dataclasses.replace(CFG, max_steps=1)
    r = train(dataset, tmp_path / "run", 1, cfg, init=str(sd), workers=0, progress=False)
    assert r.source == str(sd)
    model = load_for_inference(tmp_path / "run")
    assert all(torch.equal(p, q) for p, q in zip(model.vae.parameters(), vae.parameters()))
    # audio-attention (attn2) is frozen in stage 1: still exactly the folder's weights
    theirs, ours = unet.state_dict(), model.backbone.state_dict()
    attn2 = [k for k in theirs if ".attn2." in k]
    assert attn2 and all(torch.equal(ours[k], theirs[k]) for k in attn2)
    assert not torch.equal(ours["conv_in.weight"], theirs["conv_in.weight"])  # trained: moved
    with pytest.raises(ValueError, match="--init"):
        train(dataset, tmp_path / "other", 1, cfg, init=str(tmp_path / "missing"), workers=0, progress=False)
    with pytest.raises(TrainError, match="apply to stage 1"):
        train(dataset, tmp_path / "run", 2, cfg, init=str(sd), workers=0, progress=False)


def test_prediction_targets() -> None:
    """v = √ᾱ·eps − √(1−ᾱ)·x0 per sample (at zero terminal SNR, −x0 at t = T-1); eps; x0."""
    sched = training_scheduler("v_prediction", zero_terminal_snr=True)
    net = DiffusionLoss(EMOModel(EMOConfig.tiny()), sched, stage=1, cond_dropout=0.0)
    x0 = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 10])
    v = net.target(x0, eps, t)
    torch.testing.assert_close(v[0], -x0[0])
    a = float(sched.alphas_cumprod[10])
    torch.testing.assert_close(v[1], a**0.5 * eps[1] - (1 - a) ** 0.5 * x0[1])
    eps_net = DiffusionLoss(EMOModel(EMOConfig.tiny()), training_scheduler(), stage=1, cond_dropout=0.0)
    assert torch.equal(eps_net.target(x0, eps, t), eps)
    x0_net = DiffusionLoss(EMOModel(EMOConfig.tiny()), training_scheduler("sample"), 1, 0.0)
    assert torch.equal(x0_net.target(x0, eps, t), x0)
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        training_scheduler("epsilon", zero_terminal_snr=True)
