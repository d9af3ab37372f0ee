"""benchmarks/gpu/bench_gpu.py --dry-run: the H200 script's every part on CPU, so it cannot rot
between device runs. Its media come from benchmarks/gpu/prepare.py on the shared real footage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
TRAIN_KEYS = {"batch", "step_s_median", "samples_per_s", "flops_per_step", "mfu", "peak_memory_gb"}
GEN_KEYS = {"s_per_frame", "peak_memory_gb", "mfu", "frames", "steps", "cfg"}


def _python(*args: str | Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, *map(str, args)], check=True, cwd=ROOT, env=env, timeout=1500)


@pytest.fixture(scope="module")
def dry_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench_gpu")
    media, out = tmp / "media", tmp / "out"
    _python(GPU / "prepare.py", "--no-wheels", "--media", media, "--size", "64", "--clips", "2")
    # a generous budget: the dry run's 60 s assume a quiet machine, the test must not depend on load
    _python(GPU / "bench_gpu.py", "--dry-run", "--media", media, "--out", out, "--budget-s", "1200")
    return json.loads((out / "bench_gpu.json").read_text())


@pytest.mark.slow  # a prepare + a dry run: ~50 s of CPU on a quiet 2-core machine
def test_dry_run_records_every_figure(dry_run: dict) -> None:
    assert dry_run["complete"] is True
    for stage in (1, 2, 3):
        per_sample = dry_run["train"][f"stage{stage}"]["flops"]["flops_per_sample"]
        assert per_sample > 0
        for ckpt in ("ckpt_on", "ckpt_off"):
            r = dry_run["train"][f"stage{stage}"][ckpt]
            assert TRAIN_KEYS <= r.keys(), r
            assert r["gradient_checkpointing"] is (ckpt == "ckpt_on")
            assert r["flops_per_step"] == pytest.approx(per_sample * r["batch"])
            assert r["mfu"] == pytest.approx(r["flops_per_step"] / r["step_s_median"] / 790e12, rel=1e-3)
    cached = dry_run["train"]["stage2"]["cached_latents"]
    assert cached["batch"] == dry_run["train"]["stage2"]["ckpt_on"]["batch"] and cached["step_s_median"] > 0
    # stage 1 is one frame per sample, stages 2-3 twelve (+ four motion frames through ReferenceNet)
    flops = {s: dry_run["train"][f"stage{s}"]["flops"]["flops_per_sample"] for s in (1, 2, 3)}
    assert flops[1] * 4 < flops[2] <= flops[3]
    for name in ("emo", "fewer_1", "unipc_2"):
        assert GEN_KEYS <= dry_run["generate"][name].keys()
    assert dry_run["generate"]["unipc_2"]["scheduler"] == "unipc"
    assert dry_run["generate"]["fewer_1"]["steps"] < dry_run["generate"]["emo"]["steps"]
    flat = dry_run["flat_memory"]
    assert flat["long"]["audio_s"] > flat["short"]["audio_s"] and flat["long_complete"] is True
    assert flat["long_over_short"] == pytest.approx(
        flat["long"]["peak_memory_gb"] / flat["short"]["peak_memory_gb"], abs=2e-3
    )
    reader = dry_run["reader"]
    assert all(v > 0 for v in reader["samples_per_s_by_workers"].values())
    assert reader["needed_samples_per_s"] == max(
        dry_run["train"]["stage2"][c]["samples_per_s"] for c in ("ckpt_on", "ckpt_off")
    )


@pytest.mark.slow
def test_dry_run_never_imports_mediapipe_or_scenedetect(dry_run: dict) -> None:
    """The device has neither: the bench's import chain (emokit.train, emokit.generate) must not
    pull them in (sys.modules as the dry-run process ended)."""
    assert dry_run["imported"] == {"mediapipe": False, "scenedetect": False}


def test_wheels_in_the_header_are_the_locked_versions() -> None:
    """prepare.py downloads the WHEELS at constraints.txt's versions; the script's header, which a
    device session reads, must name the same ones (a lock bump without the header fails here)."""
    sys.path.insert(0, str(GPU))
    import bench_gpu

    pins = bench_gpu.pinned_versions(ROOT / "constraints.txt")
    for wheel in bench_gpu.WHEELS:
        assert f"{wheel}=={pins[wheel]}" in (bench_gpu.__doc__ or ""), wheel
