"""Every H200 figure of issue 11 in one device call (≤ 8 min): training, generation, memory, reader.

sd15 preset at 512², bf16, random weights (same cost as trained ones). Prints markdown tables of
every figure and writes them as JSON to ``--out``/bench_gpu.json (rewritten atomically after each
part, so a run stopped by the device's time limit still leaves the parts it finished):
- training, stages 1, 2 (f = 12 + n = 4) and 3, gradient checkpointing on and off: the largest
  batch that fits (doubling from 1 up to a cap), its step time (median of --steps after
  --warmup), samples/s, model FLOPs per step (FlopCounterMode on a batch-1 step without
  checkpointing, × batch: no recomputation counted), MFU against 790 TFLOP/s (bf16 8192³
  matmuls measured on this H200; the datasheet says 989), peak memory (max_memory_allocated);
- generation at EMO's settings (40 DDIM steps, CFG 3.5, 12 frames + 4 motion frames) and at
  fewer DDIM steps (emokit's only sampler is DDIM; fewer steps is its faster setting): s/frame,
  peak memory, MFU;
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
   writes .whl/ (the wheels below, 40.1 MiB) and .bench/ (portrait, 60 s speech, reader shards;
   ~10 MiB), both git-ignored. Wheels (versions from constraints.txt; everything else that
   emokit.train / emokit.generate import is in the device image: accelerate, einops,
   safetensors, huggingface_hub 1.33 (diffusers needs >= 1.32), numpy, pyarrow, scipy, pillow,
   opencv-python-headless, tqdm, transformers):
       diffusers==0.42.1   diffusers-0.42.1-py3-none-any.whl                   6.1 MiB
       av==18.1.0          av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl     34.1 MiB (abi3: 3.12 ok)
       setuptools==84.2.1  setuptools-84.2.1-py3-none-any.whl  0.8 MiB (builds emokit: needs >= 77)
   importlib_metadata is not needed (diffusers uses importlib.metadata on Python >= 3.8).
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
import gc
import importlib.metadata
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_train, bench_generate

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


@dataclass(frozen=True)
class Settings:
    """What one run measures: FULL on the H200, DRY (same code paths, tiny sizes) on a CPU."""

    preset: str
    device: str
    bf16: bool
    steps: int  # timed training steps
    warmup: int
    batch_caps: dict[int, int]  # stage → largest batch tried
    gen_steps: tuple[int, ...]  # DDIM steps: EMO's first, then fewer
    gen_clips: int  # timed clips per generation setting
    flat_seconds: tuple[float, float]
    workers: tuple[int, ...]
    reader_samples: int
    budget_s: float
    part_s: float  # wall-clock cap of one training (stage, checkpointing) search
    frames: int = 12
    motion_frames: int = 4
    cfg: float = 3.5
    flat_steps: int = 1
    peak_tflops: float = 790.0
    stages: tuple[int, ...] = (2, 1, 3)  # stage 2 first: the figure the targets are about
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Settings(
    "sd15", "cuda", True, 5, 2, {1: 64, 2: 16, 3: 16}, (40, 20, 10), 2, (10, 60), (4, 8, 16), 48, 420, 30
)
DRY = Settings("tiny", "cpu", False, 2, 1, {1: 2, 2: 2, 3: 2}, (2, 1), 1, (1, 2), (0, 1), 3, 60, 60)


class Budget:
    """The run's wall-clock budget: parts ask it before starting."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def free_memory(model: torch.nn.Module | None = None) -> None:
    """Drop leftovers of a part (gradients an OOM left behind, cached blocks)."""
    if model is not None:
        for p in model.parameters():
            p.grad = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]


class Run:
    """The results tree, the budget, and guarded parts that record their error and go on."""

    def __init__(self, settings: Settings, out: Path) -> None:
        self.s, self.out, self.budget = settings, out, Budget(settings.budget_s)
        self.results: dict[str, Any] = {"complete": False, "settings": asdict(settings)}

    def part(self, path: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict | None:
        *parents, leaf = path.split("/")
        node = self.results
        for k in parents:
            node = node.setdefault(k, {})
        if self.budget.left() < need_s:
            node[leaf] = {"skipped": f"time budget: {self.budget.left():.0f} s left, needs ~{need_s:.0f} s"}
            self.write()
            return None
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # an OOM or a missing wheel ends this part only
            traceback.print_exc()
            out = {"error": one_line(e)}
        out["part_s"] = round(time.perf_counter() - t, 1)
        node[leaf] = out
        print(f"[{self.budget.elapsed():6.1f} s] {path}: {json.dumps(out)[:300]}", flush=True)
        free_memory()
        self.write()
        return out

    def write(self) -> None:
        from emokit.data.atomic import atomic_path

        self.results["elapsed_s"] = round(self.budget.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "bench_gpu.json") as tmp:
            tmp.write_text(json.dumps(self.results, indent=1, default=str))


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


# ---- training ------------------------------------------------------------------------------
def train_model(s: Settings) -> torch.nn.Module:
    """The preset's EMOModel, initialised on the device (random init on the GPU takes seconds)."""
    from emokit.models import EMOModel
    from emokit.train.loop import PRESETS

    torch.manual_seed(0)
    with torch.device(s.device):
        return EMOModel(PRESETS[s.preset]()).to(s.device)


def try_batch(model, stage: int, b: int, s: Settings, res: int) -> dict:
    """One step at batch ``b``: does it fit, how long, how much memory."""
    from bench_train import TrainStep, peak_memory_gb

    device = torch.device(s.device)
    row: dict[str, Any] = {"batch": b, "fits": False}
    try:
        step = TrainStep(model, stage, b, s.frames, s.motion_frames, res, device, s.bf16)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        step(1)
        row.update(fits=True, first_step_s=round(time.perf_counter() - t, 4))
        row["peak_memory_gb"] = round(peak_memory_gb(device), 3)
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = one_line(e)[:120]
    step = None
    free_memory(model)
    return row


def train_figures(model, stage: int, ckpt: bool, s: Settings, res: int, flops_per_sample: float, run: Run):
    """The largest batch that fits (doubling up to the cap, within ``part_s``), then its timing."""
    from bench_train import TrainStep, peak_memory_gb

    device = torch.device(s.device)
    (model.enable_gradient_checkpointing if ckpt else model.disable_gradient_checkpointing)()
    stop = min(time.perf_counter() + s.part_s, run.budget.deadline)
    search, best, b = [], 0, 1
    while b <= s.batch_caps[stage]:
        row = try_batch(model, stage, b, s, res)
        search.append(row)
        if not row["fits"]:
            break
        best = b
        # the next batch costs ~2× this step for the search and (steps + warmup) more to time
        if time.perf_counter() + 2 * row["first_step_s"] * (2 + s.steps + s.warmup) > stop:
            break
        b *= 2
    if not best:
        return {"error": "batch 1 does not fit", "search": search}
    step = TrainStep(model, stage, best, s.frames, s.motion_frames, res, device, s.bf16)
    times = step.time(s.steps, s.warmup)
    peak = peak_memory_gb(device)
    trainable = sum(p.numel() for p in step.params)
    step = None
    free_memory(model)
    med = statistics.median(times)
    flops = flops_per_sample * best
    return {
        "stage": stage,
        "gradient_checkpointing": ckpt,
        "batch": best,
        "batch_cap": s.batch_caps[stage],
        "cap_reached": best == s.batch_caps[stage],
        "frames": 1 if stage == 1 else s.frames,
        "motion_frames": 0 if stage == 1 else s.motion_frames,
        "resolution": res,
        "step_s_median": round(med, 5),
        "step_s_min": round(min(times), 5),
        "step_s_max": round(max(times), 5),
        "steps_timed": len(times),
        "samples_per_s": round(best / med, 3),
        "flops_per_step": flops,
        "achieved_tflops": round(flops / med / 1e12, 3),
        "mfu": round(flops / med / (s.peak_tflops * 1e12), 5),
        "peak_memory_gb": round(peak, 3),
        "params_trainable": trainable,
        "search": search,
    }


def training(run: Run) -> None:
    s = run.s
    holder: dict[str, Any] = {}

    def build() -> dict:
        holder["model"] = model = train_model(s)
        return {"params_total": sum(p.numel() for p in model.parameters())}

    if run.part("train/model", build) is None or "model" not in holder:
        return
    model = holder["model"]
    res = model.config.sample_size * model.config.vae_factor
    for stage in s.stages:
        key = f"train/stage{stage}"

        def count(stage: int = stage) -> dict:
            from bench_train import TrainStep

            step = TrainStep(model, stage, 1, s.frames, s.motion_frames, res, torch.device(s.device), s.bf16)
            flops, kind = step.count_flops()
            return {"flops_per_sample": flops, "flops_kind": kind}

        counted = run.part(f"{key}/flops", count, need_s=5)
        free_memory(model)
        per_sample = (counted or {}).get("flops_per_sample")
        for ckpt in (True, False):
            name = f"{key}/ckpt_{'on' if ckpt else 'off'}"
            if per_sample is None:
                run.part(name, lambda: {"error": "no FLOP count for this stage"})
                continue
            run.part(
                name,
                lambda stage=stage, ckpt=ckpt, f=per_sample: train_figures(
                    model, stage, ckpt, s, res, f, run
                ),
                need_s=10,
            )
    holder.clear()
    model = None
    free_memory()


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
    for i, steps in enumerate(s.gen_steps):
        name = "emo" if i == 0 else f"fewer_{i}"
        run.part(
            f"generate/{name}",
            lambda steps=steps: with_peak(
                measure(
                    gen,
                    portrait,
                    clip_audio,
                    steps,
                    s.cfg,
                    clips=s.gen_clips,
                    count_flops=True,
                    peak_tflops=s.peak_tflops,
                    deadline=run.budget.deadline,
                )
            ),
            need_s=10,
        )
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
    need = [r["samples_per_s"] for r in stage2.values() if isinstance(r, dict) and "samples_per_s" in r]
    rates = [v for v in rd.get("samples_per_s_by_workers", {}).values() if v is not None]
    if need and rates:
        rd["needed_samples_per_s"] = max(need)
        rd["reader_is_bottleneck"] = max(rates) < max(need)


# ---- report --------------------------------------------------------------------------------
def fmt(v: Any, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def tables(results: dict) -> str:
    """Every figure as markdown tables (what BENCHMARKS.md pastes)."""
    cols = "stage | grad ckpt | batch (cap) | step s (median) | samples/s | TFLOP/step | TFLOP/s | MFU | GiB"
    lines = [f"| {cols} |", "|---" * 9 + "|"]
    for stage, parts in results.get("train", {}).items():
        if not stage.startswith("stage"):
            continue
        for ck in ("ckpt_on", "ckpt_off"):
            r = parts.get(ck, {})
            why = r.get("error") or r.get("skipped")
            if why:
                lines.append(f"| {stage[5:]} | {ck[5:]} | {why} | | | | | | |")
                continue
            lines.append(
                f"| {stage[5:]} | {ck[5:]} | {r['batch']} ({r['batch_cap']}) | {fmt(r['step_s_median'])} | "
                f"{fmt(r['samples_per_s'])} | {fmt(r['flops_per_step'] / 1e12)} | "
                f"{fmt(r['achieved_tflops'])} | "
                f"{100 * r['mfu']:.2f} % | {fmt(r['peak_memory_gb'])} |"
            )
    lines += [
        "",
        "| generation | DDIM steps | CFG | frames | s/frame | peak GiB | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in ("generate", "flat_memory"):
        for name, r in results.get(part, {}).items():
            if not isinstance(r, dict) or name == "setup":
                continue
            if "s_per_frame" not in r:
                lines.append(f"| {part}/{name} | {r.get('error') or r.get('skipped')} | | | | | |")
                continue
            mfu = f"{100 * r['mfu']:.2f} %" if "mfu" in r else "—"
            lines.append(
                f"| {part}/{name} ({r['audio_s']} s audio) | {r['steps']} | {r['cfg']} | {r['frames']} | "
                f"{fmt(r['s_per_frame'])} | {fmt(r['peak_memory_gb'])} | {mfu} |"
            )
    flat = results.get("flat_memory", {})
    if "long_over_short" in flat:
        lines.append(f"\nflat memory: long / short peak = {flat['long_over_short']}")
    rd = results.get("reader", {})
    lines += ["", "| reader workers | stage-2 samples/s |", "|---|---|"]
    for w, rate in rd.get("samples_per_s_by_workers", {}).items():
        lines.append(f"| {w} | {fmt(rate)} |")
    if "needed_samples_per_s" in rd:
        lines.append(f"| needed by the stage-2 step | {fmt(rd['needed_samples_per_s'])} |")
    elif "samples_per_s_by_workers" not in rd:
        lines.append(f"| — | {rd.get('skipped') or rd.get('error')} |")
    return "\n".join(lines)


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
