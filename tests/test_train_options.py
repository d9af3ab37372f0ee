"""Trainer options (tiny preset, CPU): gradient accumulation, LR warm-up, mixed precision,
TensorBoard through accelerate's tracker, sample videos during training, exact resume."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import struct

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from emokit.cli import app
from emokit.config import TrainConfig
from emokit.models import EMOConfig, EMOModel
from emokit.train.accumulate import accumulate_gradients, micro_steps
from emokit.train.checkpoint import load_checkpoint_model
from emokit.train.dataset import ClipDataset, index_clips
from emokit.train.loop import TrainError, step_seed, train
from emokit.train.loss import DiffusionLoss
from emokit.train.lr_schedule import set_lr, warmup_factor
from emokit.train.noise import training_scheduler
from train_shards import build_dataset

L, D, LR = 2, 8, 1e-3
CFG = TrainConfig(max_steps=4, checkpoint_every=100, log_every=1, frames=4, motion_frames=2, lr=LR)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", L, D)


def _run(dataset, run, cfg, **kw):
    return train(dataset, run, 1, cfg, workers=0, progress=False, **kw)


def _log(run) -> list[dict[str, str]]:
    with open(run / "stage1" / "log.csv") as f:
        return list(csv.DictReader(f))


def test_warmup_schedule():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == warmup_factor(0, 1) == warmup_factor(7, 0) == 1.0
    with pytest.raises(ValueError):
        warmup_factor(-1, 4)
    opt = torch.optim.AdamW(
        [{"params": [torch.nn.Parameter(torch.ones(1))]}, {"params": [], "lr": 3e-3}], 1e-3
    )
    assert set_lr(opt, [1e-3, 3e-3], 1, 4) == pytest.approx(5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 1.5e-3])


class _Regression(torch.nn.Module):
    """A deterministic loss(batch, gen): mean squared error of a linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        return ((self.lin(batch["x"]) - batch["y"]) ** 2).mean()


def test_accumulated_gradient_equals_one_big_batch():
    """2 micro-batches of 3 through accelerate's accumulate = one batch of 6 (mean loss)."""
    from accelerate import Accelerator

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 6, generator=g), torch.randn(6, 3, generator=g)
    torch.manual_seed(0)
    big = _Regression()
    ((big.lin(x) - y) ** 2).mean().backward()
    small = _Regression()
    small.load_state_dict(big.state_dict())
    acc = Accelerator(cpu=True, gradient_accumulation_steps=2)
    halves = iter([{"x": x[:3], "y": y[:3]}, {"x": x[3:], "y": y[3:]}])
    loss = accumulate_gradients(acc, small, halves, [1, 2], torch.Generator())
    assert acc.sync_gradients
    torch.testing.assert_close(loss, ((big.lin(x) - y) ** 2).mean().detach())
    for p, q in zip(small.parameters(), big.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    assert list(micro_steps(3, 2)) == [6, 7]
    with pytest.raises(ValueError, match="accumulates 2"):
        accumulate_gradients(acc, small, halves, [1], torch.Generator())


def _emulate(dataset, cfg: TrainConfig, micro: int, warmup: int) -> dict[str, torch.Tensor]:
    """The weights after one optimizer step over ``micro`` micro-batches of one clip, written
    out by hand: micro-step k takes sample k and noise seed step_seed(seed, k, 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = EMOModel(dataclasses.replace(EMOConfig.tiny(), audio_layers=L, audio_dim=D))
    chosen = {id(p) for p in model.set_stage(1)}
    trainable = [p for p in model.parameters() if id(p) in chosen]
    net = DiffusionLoss(model, training_scheduler(), 1, cfg.cond_dropout, cfg.cond_drop_both)
    opt = torch.optim.AdamW(trainable, lr=LR * warmup_factor(0, warmup), weight_decay=cfg.weight_decay)
    clips, _ = index_clips(dataset, 1, cfg.frames, cfg.motion_frames, cfg.drop_flags)
    ds, gen = ClipDataset(clips, 1, 64, seed=cfg.seed), torch.Generator()
    for k in range(micro):
        batch = {n: v[None] for n, v in ds[k].items() if isinstance(v, torch.Tensor)}
        gen.manual_seed(step_seed(cfg.seed, k, 0))
        (net(batch, gen) / micro).backward()
    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
    opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def _raw(final) -> dict[str, torch.Tensor]:
    """The trained (not EMA) weights of a finished stage, by EMOModel name."""
    return {k: v.detach() for k, v in load_checkpoint_model(final, ema=False).state_dict().items()}


def test_grad_accum_and_warmup_one_step(dataset, tmp_path):
    """--grad-accum 3 --batch-size 1 with a 4-step warm-up: one optimizer step over samples 0-2
    (each with its own noise) at lr/4 — the step a batch of 3 takes."""
    cfg = dataclasses.replace(CFG, max_steps=1, grad_accum=3, warmup_steps=4)
    _run(dataset, tmp_path / "run", cfg)
    trained = _raw(tmp_path / "run" / "stage1" / "final")
    expected = _emulate(dataset, cfg, 3, 4)
    one_micro = _emulate(dataset, cfg, 1, 4)  # what a loop that ignored accumulation would give
    for k, v in expected.items():
        torch.testing.assert_close(trained[k], v, rtol=0, atol=1e-6)
    assert max((one_micro[k] - v).abs().max().item() for k, v in expected.items()) > 1e-4
    assert float(_log(tmp_path / "run")[0]["lr"]) == pytest.approx(LR / 4)


class _Stop(Exception):
    pass


def test_resume_with_accumulation_is_exact(dataset, tmp_path):
    """Killed after the step-2 checkpoint, rerun: same weights and log as one uninterrupted run
    (micro-batches, noise seeds and the warm-up LR all follow from the step)."""
    cfg = dataclasses.replace(CFG, grad_accum=2, warmup_steps=3, checkpoint_every=2)
    _run(dataset, tmp_path / "whole", cfg)

    def stop_after_checkpoint(message: str) -> None:
        if message.startswith("checkpoint step 2"):
            raise _Stop

    with pytest.raises(_Stop):
        _run(dataset, tmp_path / "cut", cfg, log=stop_after_checkpoint)
    assert (tmp_path / "cut" / "stage1" / "step-00000002").is_dir()
    r = _run(dataset, tmp_path / "cut", cfg)
    assert (r.start_step, r.step) == (2, 4)
    a = _raw(tmp_path / "whole" / "stage1" / "final")
    b = _raw(tmp_path / "cut" / "stage1" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole, cut = _log(tmp_path / "whole"), _log(tmp_path / "cut")
    assert [r["lr"] for r in cut] == [r["lr"] for r in whole] == ["0.000333", "0.000667", "0.001", "0.001"]
    assert [r["loss"] for r in cut] == [r["loss"] for r in whole]


def _scalars(folder) -> dict[str, dict[int, float]]:
    """Every scalar of the TensorBoard event files under ``folder``: tag → {step: value}
    (TFRecord framing: u64 length, u32 crc, payload, u32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {folder}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_tensorboard_and_samples(dataset, tmp_path):
    """--log-with tensorboard --sample-every 2 over 4 steps: the loss of every step in the event
    file (equal to log.csv's), sample grid + mp4 at steps 2 and 4, training itself unchanged."""
    cfg = dataclasses.replace(CFG, log_with="tensorboard", sample_every=2, sample_steps=2, sample_frames=3)
    messages: list[str] = []
    _run(dataset, tmp_path / "run", cfg, log=messages.append)
    rows = _log(tmp_path / "run")
    scalars = _scalars(tmp_path / "run" / "tensorboard" / "stage1")
    assert sorted(scalars["loss"]) == [1, 2, 3, 4]
    for row in rows:
        assert scalars["loss"][int(row["step"])] == pytest.approx(float(row["loss"]), abs=1e-6)
    assert scalars["lr"][4] == pytest.approx(LR)

    samples = tmp_path / "run" / "stage1" / "samples"
    names = sorted(p.name for p in samples.iterdir())
    assert names == ["step_000002.mp4", "step_000002.png", "step_000004.mp4", "step_000004.png"]
    grids = [np.asarray(Image.open(samples / f"step_00000{s}.png")) for s in (2, 4)]
    assert all(g.shape == (2 * 64, 3 * 64, 3) for g in grids)
    assert np.array_equal(grids[0][:64], grids[1][:64])  # the real frames: the same clip
    assert not np.array_equal(grids[0][64:], grids[1][64:])  # generated: the weights moved
    with av.open(str(samples / "step_000004.mp4")) as c:
        assert len(list(c.decode(video=0))) == 3 and len(c.streams.audio) == 1
    assert sum(m.startswith("sample step") for m in messages) == 2

    two = dataclasses.replace(cfg, max_steps=2)  # stage 2: motion frames and audio in the sampler
    train(dataset, tmp_path / "run", 2, two, workers=0, progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "stage2" / "samples").iterdir()) == [
        "step_000002.mp4",
        "step_000002.png",
    ]
    assert sorted(_scalars(tmp_path / "run" / "tensorboard" / "stage2")["loss"]) == [1, 2]

    _run(dataset, tmp_path / "plain", CFG)  # no trackers, no samples: the same training
    a = _raw(tmp_path / "run" / "stage1" / "final")
    b = _raw(tmp_path / "plain" / "stage1" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wandb_mode(monkeypatch, tmp_path):
    """W&B never tries the network without a key or with the Hub offline; WANDB_MODE wins."""
    from emokit.train.trackers import wandb_mode

    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login x password y\n")
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_bad_options_are_refused(dataset, tmp_path):
    bad = {
        "mixed_precision": ("fp32", "mixed_precision must be one of auto, no, fp16, bf16"),
        "log_with": ("mlflow", "--log-with takes tensorboard, wandb"),
        "grad_accum": (0, "grad_accum must be at least 1"),
        "warmup_steps": (-1, "warmup_steps"),
        "audio_start": ("random", "audio_start one of zero_tokens, zero_output"),
    }
    for field, (value, message) in bad.items():
        with pytest.raises(TrainError, match=message):
            _run(dataset, tmp_path / "r", dataclasses.replace(CFG, **{field: value}))
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(TrainError, match="needs the wandb package: pip install wandb"):
            _run(dataset, tmp_path / "r", dataclasses.replace(CFG, log_with="tensorboard,wandb"))
    with pytest.raises(TrainError, match="fp16 needs a CUDA device"):
        _run(dataset, tmp_path / "r", dataclasses.replace(CFG, mixed_precision="fp16"), device="cpu")
    r = CliRunner().invoke(
        app,
        ["train", str(dataset), "--stage", "1", "-o", str(tmp_path / "r"), "--device", "cpu"]
        + ["--mixed-precision", "fp16"],
    )
    assert r.exit_code == 2 and "fp16 needs a CUDA device" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
