"""`emokit train` killed with SIGKILL mid-run, then rerun: it resumes where the checkpoint was and
ends with the same weights as a run that was never interrupted.

Bit-exact on any CPU because both runs execute on the same machine and the resumed run's tensors
sit in memory like the fresh run's (64-byte aligned, see ``pretrained.load_tensors``). The runs use
MKL's SSE4.2 code path (``MKL_ENABLE_INSTRUCTIONS``), the one that many non-Intel CPUs get and
whose sgemm rounds by operand alignment: the setting under which unaligned loaded weights broke
resume (AMD EPYC CI), reproduced on an Intel CPU."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from train_shards import build_dataset

STEPS, EVERY = 8, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, videos):
    return build_dataset(
        tmp_path_factory.mktemp("ds"), videos / "head_turn_25fps_224.mp4", 2, 8, extras=False
    )


def _command(dataset, run) -> list[str]:
    recipe = run.parent / "recipe.toml"  # a log.csv row per step
    recipe.write_text("[train]\nlog_every = 1\n")
    return [
        sys.executable,
        "-m",
        "emokit",
        "train",
        str(dataset),
        "--stage",
        "1",
        "-o",
        str(run),
        "--max-steps",
        str(STEPS),
        "--checkpoint-every",
        str(EVERY),
        "--lr",
        "1e-3",
        "--workers",
        "1",
        "--config",
        str(recipe),
    ]


def _weights(folder) -> dict[str, torch.Tensor]:
    """Every weight file of a final (pipeline) folder: EMA defaults and raw variants, by file."""
    return {
        f"{path.relative_to(folder)}:{k}": v
        for path in sorted(folder.glob("*/diffusion_pytorch_model*.safetensors"))
        for k, v in load_file(path).items()
    }


def test_loaded_weights_are_aligned(tmp_path):
    """Checkpoint tensors come back in torch-allocated memory, 64-byte aligned like fresh ones
    (safetensors alone returns them at file offsets: the cause of the resume drift)."""
    from safetensors.torch import save_file

    from emokit.models.pretrained import load_tensors

    tensors = {f"t{i}": torch.arange(n, dtype=torch.float32) for i, n in enumerate([3, 5, 7, 100, 9])}
    save_file(tensors, tmp_path / "w.safetensors")
    loaded = load_tensors(tmp_path / "w.safetensors")
    assert all(t.data_ptr() % 64 == 0 for t in loaded.values())
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_sigkill_then_rerun_resumes(dataset, tmp_path):
    run = tmp_path / "run"
    # one torch thread: the data worker gets the other core, and numerics match across runs;
    # MKL on its alignment-sensitive path (see the module docstring)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    proc = subprocess.Popen(
        _command(dataset, run), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )  # stderr: tqdm bar
    seen = []
    for line in proc.stdout:  # blocks until the trainer reports its first checkpoint
        seen.append(line)
        if line.startswith("checkpoint step"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    sdir = run / "stage1"
    assert not (sdir / "final").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in sdir.glob("step-*"))
    assert steps and steps[-1] % EVERY == 0 and steps[-1] < STEPS
    killed_at = steps[-1]

    out = subprocess.run(_command(dataset, run), capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"resuming from step {killed_at} ", out.stdout), out.stdout
    assert f"step {STEPS}, resumed from step {killed_at}" in out.stdout
    assert sorted(p.name for p in sdir.iterdir()) == ["final", "log.csv"]  # no temp, no step dirs
    assert not list(run.rglob(".tmp-*"))
    with open(sdir / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, STEPS + 1))

    # the interrupted run equals an uninterrupted one (optimizer, EMA, data order, noise restored)
    straight = tmp_path / "straight"
    subprocess.run(_command(dataset, straight), check=True, capture_output=True, env=env)
    resumed, reference = _weights(sdir / "final"), _weights(straight / "stage1" / "final")
    assert resumed.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name

    again = subprocess.run(_command(dataset, run), capture_output=True, text=True, env=env)
    assert again.returncode == 0 and f"stage 1 already finished at step {STEPS}" in again.stdout
