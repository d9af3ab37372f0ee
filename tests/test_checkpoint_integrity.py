"""Damaged checkpoints: verified by SHA-256 on load, a damaged latest step falls back to the one
before it, a damaged final is not a finished stage, NaN weights and corrupt EMA are one line."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from emokit.config import TrainConfig
from emokit.models import CheckpointError
from emokit.train.checkpoint import INFO_FILE, file_hashes, load_for_inference
from emokit.train.loop import train
from train_shards import build_dataset

CFG = TrainConfig(max_steps=3, checkpoint_every=1, log_every=1, lr=1e-3)


class _Killed(Exception):
    pass


def _kill_after(step: int):
    def log(message: str) -> None:
        if message.startswith(f"checkpoint step {step}:"):
            raise _Killed(message)  # the run stops right after this checkpoint, as if killed

    return log


def _damage(path, at: int = 4096, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + n] = os.urandom(min(n, len(data) - at))
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, videos):
    """A run killed after step 2, whose step-2 folder is then damaged, and its rerun."""
    root = tmp_path_factory.mktemp("ckpt")
    ds = build_dataset(root / "ds", videos / "head_turn_25fps_224.mp4", 2, 8, extras=False)
    run = root / "run"
    with pytest.raises(_Killed):
        train(ds, run, 1, CFG, workers=0, progress=False, log=_kill_after(2))
    sdir = run / "stage1"
    assert sorted(p.name for p in sdir.glob("step-*")) == ["step-00000001", "step-00000002"]  # two kept
    _damage(sdir / "step-00000002" / "model" / "model.safetensors")
    return ds, run


def test_damaged_latest_step_falls_back_to_the_previous_one(finished, caplog):
    ds, run = finished
    with caplog.at_level(logging.WARNING):
        r = train(ds, run, 1, CFG, workers=0, progress=False)
    assert r.start_step == 1 and r.step == 3 and not r.already_finished
    assert any("step-00000002" in m and "checksum" in m for m in caplog.messages)
    info = json.loads((r.final / INFO_FILE).read_text())
    assert info["sha256"] == file_hashes(r.final)  # every file of the folder is covered


def test_damaged_final_is_not_a_finished_stage(finished, tmp_path):
    import shutil

    ds, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "stage1" / "final" / "backbone" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="backbone/diffusion_pytorch_model.safetensors"):
        train(ds, copy, 1, CFG, workers=0, progress=False)


def test_corrupt_ema_and_nan_weights_are_one_line_naming_the_file(finished, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished[1], copy)
    final = copy / "stage1" / "final"
    ema_path = final / "backbone" / "diffusion_pytorch_model.safetensors"  # EMA weights: the default
    good = ema_path.read_bytes()
    _damage(ema_path, at=len(good) // 2)  # 4 KB of random bytes inside the weights
    with pytest.raises(CheckpointError, match="backbone/diffusion_pytorch_model.safetensors") as e:
        load_for_inference(copy)
    assert "\n" not in str(e.value)
    ema_path.write_bytes(good)
    ema = load_file(ema_path)
    name = next(iter(ema))
    ema[name].view(-1)[0] = float("nan")  # a diverged run saved NaN: checksums match, weights do not
    save_file(ema, ema_path)
    info = json.loads((final / INFO_FILE).read_text())
    (final / INFO_FILE).write_text(json.dumps({**info, "sha256": file_hashes(final)}))
    with pytest.raises(CheckpointError, match=f"diffusion_pytorch_model.safetensors: weight {name} has NaN"):
        load_for_inference(copy)
    assert torch.isfinite(load_for_inference(copy, ema=False).backbone.conv_in.weight).all()
