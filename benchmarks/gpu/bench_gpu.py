"""Every H200 figure of issue 11 in one device call (≤ 8 min): training, generation, memory, reader.

sd15 preset at 512², bf16, random weights (same cost as trained ones). Prints markdown tables of
every figure and writes them as JSON to ``--out``/bench_gpu.json (rewritten atomically after each
part, so a run stopped by the device's time limit still leaves the parts it finished):
- training, stages 1, 2 (f = 12 + n = 4) and 3, gradient checkpointing on and off: the largest
  batch that fits (doubling from 1 up to a cap; `search_stopped_by` says whether the cap, an OOM
  or the time left ended the search), its step time (median of --steps after
  --warmup), samples/s, model FLOPs per step (FlopCounterMode on a batch-1 step without
  checkpointing, × batch: no recomputation counted), MFU against 790 TFLOP/s (bf16 8192³
  matmuls measured on this H200; the datasheet says 989), peak memory (max_memory_allocated);
  and the stage-2 step on cached VAE latents (--cache-latents) against it at the same batch;
- generation at EMO's settings (40 DDIM steps, CFG 3.5, 12 frames + 4 motion frames) and at
  20 and 10 DDIM steps, and with UniPC at 10 steps (`--scheduler unipc`: on a trained run as close
  to DDIM-40 as ~14 DDIM steps, BENCHMARKS.md "Samplers"): s/frame, peak memory, MFU;
- flat memory: the same generator over 10 s and 60 s of audio (frames only, 1 DDIM step: memory
  does not depend on the step count);
- the training reader: stage-2 samples/s (16 frames + reference decoded at 512²) with 4, 8 and 16
  DataLoader workers against the samples/s the stage-2 step consumes. Needs PyAV; skipped with
  a message when ``av`` is not importable.
One part failing (an OOM, a missing wheel) records its error in the JSON and the run goes on; a
global time budget (--budget-s) skips what would not finish. MediaPipe and scenedetect are never
imported (checked at the end and recorded under "imported").

On the device machine (torch 2.11 + CUDA preinstalled; no network, no diffusers, no PyAV, no
MediaPipe), everything else it needs travels with the working tree:

1. Here (network to PyPI, ../shared/data beside the checkout), once:
       PYTHONPATH=. .venv/bin/python benchmarks/gpu/prepare.py
   writes .whl/ (the wheels below, 41.0 MiB) and .bench/ (portrait, 60 s speech, reader shards:
   7.1 MiB; with the ~1.5 MiB tree 49.6 MiB of the 64 a call carries), both git-ignored.
   Wheels (versions from constraints.txt; everything else that emokit.train / emokit.generate
   import is in the device image: accelerate, einops,
   safetensors, huggingface_hub 1.33 (diffusers needs >= 1.32), numpy, pyarrow, scipy, pillow,
   opencv-python-headless, tqdm, transformers):
       diffusers==0.42.1   diffusers-0.42.1-py3-none-any.whl                   6.1 MiB
       av==18.1.0          av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl     34.1 MiB (abi3: 3.12 ok)
       setuptools==84.2.1  setuptools-84.2.1-py3-none-any.whl  0.8 MiB (builds emokit: needs >= 77)
   importlib_metadata is not needed (diffusers uses importlib.metadata on Python >= 3.8).
   Not verified on the device (none was lent when this was written): diffusers' quantizers import
   transformers when it is installed, and the image has 5.17 (the lock: 5.24.0). device.sh checks
   `import emokit.train, emokit.generate` before the benchmark; if that fails there, add
   transformers==5.24.0 to WHEELS (12.9 MiB: wheels + media then ~61 MiB of the 64).
2. One device call: command `bash benchmarks/gpu/device.sh`, carry [".whl", ".bench"], timeout_s
   600. device.sh installs the carried wheels, then emokit from the carried tree, both
   `pip install --no-index --no-deps --target /tmp/site` (PYTHONPATH=/tmp/site), checks that
   emokit.train and emokit.generate import, and runs this script with --media .bench --out $OUT
   (log: $OUT/bench_gpu.log). ~6 min of the 8: the default --budget-s is 420.

Dry run (tiny preset, CPU, a few steps; tests/test_bench_gpu.py runs it):
    PYTHONPATH=. .venv/bin/python benchmarks/gpu/prepare.py --no-wheels --media /tmp/m --size 64
    PYTHONPATH=. .venv/bin/python benchmarks/gpu/bench_gpu.py --dry-run --media /tmp/m --out /tmp/o
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_train, bench_generate
from gpu_report import tables  # noqa: E402
from gpu_run import DRY, FULL, Run, Settings  # noqa: E402
from gpu_train import training  # noqa: E402

CARRY_LIMIT_MB = 64  # what one device call carries: working tree + carried folders
WHEELS = ("diffusers", "av", "setuptools")  # missing from the device image (see the header)
FORBIDDEN = ("mediapipe", "scenedetect")
VERSIONS = ("torch", "numpy", "diffusers", "av", "accelerate", "safetensors", "einops", "huggingface-hub")


def pinned_versions(constraints: Path) -> dict[str, str]:
    """name → version of every ``name==version`` line (names lower-case, ``_`` as ``-``)."""
    pins = {}
    for line in constraints.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def environment(s: Settings) -> dict:
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name() if s.device == "cuda" else "CPU",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    for name in VERSIONS:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "missing"
    import emokit

    info["emokit"] = str(Path(emokit.__file__).parent)
    return info


# ---- generation ----------------------------------------------------------------------------
def bench_portrait(media: Path, size: int):
    """The portrait prepare.py framed with load_portrait (MediaPipe runs there, not here)."""
    from PIL import Image

    from emokit.data.faces import FaceBox
    from emokit.generate.portrait import Portrait

    z = np.load(media / "portrait.npz")
    image, mask = z["image"], z["face_mask"]
    if image.shape[0] != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
        mask = np.asarray(Image.fromarray(mask[0]).resize((size, size), Image.Resampling.NEAREST))[None]
    crop = tuple(float(v) for v in z["crop_box"])
    source = tuple(int(v) for v in z["source_size"])
    box = FaceBox(*(float(v) for v in z["face_box"]))
    return Portrait(image, mask.astype(np.float32), box, crop, source, int(z["faces"]), ())  # type: ignore[arg-type]


def with_peak(r: dict) -> dict:
    r["peak_memory_gb"] = r.get("peak_cuda_gb", r["peak_rss_gb"])
    return r


def generation(run: Run, media: Path, work: Path) -> dict:
    """s/frame, peak memory and MFU at EMO's settings and fewer steps; returns the generator."""
    from bench_generate import build, fit_length, measure

    from emokit.generate.generator import FPS, Speech

    s, ctx = run.s, {}

    def setup() -> dict:
        t = time.perf_counter()
        ctx["gen"] = gen = build(s.preset, torch.device(s.device), "auto", work, s.frames)
        ctx["portrait"] = bench_portrait(media, gen.native_size)
        ctx["speech"] = Speech.load(media / "speech_60s.wav")
        return {
            "build_s": round(time.perf_counter() - t, 1),
            "size": gen.native_size,
            "dtype": str(gen.dtype),
        }

    run.part("generate/setup", setup)
    if "speech" not in ctx:
        return ctx
    gen, portrait, speech = ctx["gen"], ctx["portrait"], ctx["speech"]
    clip_audio = fit_length(speech, s.gen_clips * s.frames / FPS)

    def timed(steps: int) -> dict:
        return measure(
            gen,
            portrait,
            clip_audio,
            steps,
            s.cfg,
            clips=s.gen_clips,
            count_flops=True,
            peak_tflops=s.peak_tflops,
            deadline=run.budget.deadline,
            reset_rss=True,
        )

    for i, steps in enumerate(s.gen_steps):
        name = "emo" if i == 0 else f"fewer_{i}"
        run.part(f"generate/{name}", lambda steps=steps: with_peak(timed(steps)), need_s=10)
    name, steps = s.fast_solver  # the same measurement with a multistep solver in place of DDIM

    def fast() -> dict:
        from emokit.generate.schedulers import make_scheduler

        ddim = gen.scheduler
        gen.scheduler = make_scheduler(name, ddim.config, gen.prediction_type, gen.spacing)
        try:
            r = timed(steps)
        finally:
            gen.scheduler = ddim
        return with_peak({**r, "scheduler": name})

    run.part(f"generate/{name}_{steps}", fast, need_s=10)
    return ctx


def flat_memory(run: Run, ctx: dict) -> None:
    """The same generator over a short and a long track: peak memory must not grow with length."""
    from bench_generate import fit_length, measure

    from emokit.generate.generator import FPS

    s = run.s
    for tag, seconds in zip(("short", "long"), s.flat_seconds):
        if "speech" not in ctx:
            run.part(f"flat_memory/{tag}", lambda: {"error": "no generator (see generate/setup)"})
            continue
        run.part(
            f"flat_memory/{tag}",
            lambda seconds=seconds: with_peak(
                measure(
                    ctx["gen"],
                    ctx["portrait"],
                    fit_length(ctx["speech"], seconds),
                    s.flat_steps,
                    s.cfg,
                    deadline=run.budget.deadline,
                    reset_rss=True,
                )
            ),
            need_s=15,
        )
    flat = run.results.get("flat_memory", {})
    if all("peak_memory_gb" in flat.get(k, {}) for k in ("short", "long")):
        short, long = flat["short"], flat["long"]
        flat["long_over_short"] = round(long["peak_memory_gb"] / short["peak_memory_gb"], 3)
        flat["long_complete"] = long["frames"] == math.ceil(long["audio_s"] * FPS)
        run.write()


# ---- the training reader -------------------------------------------------------------------
def reader(run: Run, media: Path) -> dict:
    try:
        import av  # noqa: F401
    except ImportError as e:
        return {"skipped": f"PyAV is not importable ({e}); carry the av wheel (.whl/, prepare.py)"}
    from bench_train import loader_rate

    from emokit.models import EMOConfig

    s = run.s
    config = EMOConfig.sd15() if s.preset == "sd15" else EMOConfig.tiny()
    res = config.sample_size * config.vae_factor
    dataset = media / "dataset"
    if not (dataset / "shards").is_dir():
        return {"error": f"no reader dataset at {dataset}: run benchmarks/gpu/prepare.py, carry .bench"}
    rates: dict[str, float | None] = {}
    for w in s.workers:
        if run.budget.left() < 10:
            rates[str(w)] = None  # out of time
            continue
        samples = max(s.reader_samples, 4 * w)
        rates[str(w)] = round(loader_rate(dataset, res, s.frames, s.motion_frames, w, samples), 3)
    return {
        "samples_per_s_by_workers": rates,
        "frames_decoded_per_sample": s.motion_frames + s.frames + 1,
        "resolution": res,
        "cores": os.cpu_count(),
    }


def reader_verdict(results: dict) -> None:
    """The stage-2 rate the reader must feed (the faster of checkpointing on/off) vs its best."""
    rd = results.get("reader", {})
    stage2 = results.get("train", {}).get("stage2", {})
    # the pixel steps only: with cached latents the reader decodes no video
    pixel = [stage2.get(k, {}) for k in ("ckpt_on", "ckpt_off")]
    need = [r["samples_per_s"] for r in pixel if "samples_per_s" in r]
    rates = [v for v in rd.get("samples_per_s_by_workers", {}).values() if v is not None]
    if need and rates:
        rd["needed_samples_per_s"] = max(need)
        rd["reader_is_bottleneck"] = max(rates) < max(need)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for bench_gpu.json")
    ap.add_argument("--media", type=Path, default=Path(".bench"), help="prepare.py's folder")
    ap.add_argument("--dry-run", action="store_true", help="tiny preset on CPU, a few steps")
    ap.add_argument("--budget-s", type=float, help="wall-clock budget (default 420 s; dry run 60 s)")
    args = ap.parse_args()
    s = DRY if args.dry_run else FULL
    if args.budget_s:
        s = Settings(**{**asdict(s), "budget_s": args.budget_s})
    if s.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device (use --dry-run on a CPU)")
    run = Run(s, args.out)
    run.part("env", lambda: environment(s))
    with tempfile.TemporaryDirectory(prefix="emokit-bench-gpu-") as work:
        training(run)
        ctx = generation(run, args.media, Path(work))
        run.part("reader", lambda: reader(run, args.media), need_s=10)
        flat_memory(run, ctx)
        ctx.clear()
    reader_verdict(run.results)
    run.results["imported"] = {m: m in sys.modules for m in FORBIDDEN}
    run.results["complete"] = True
    run.write()
    print(tables(run.results))
    print(f"\n{args.out / 'bench_gpu.json'} ({run.budget.elapsed():.0f} s)")


if __name__ == "__main__":
    main()
