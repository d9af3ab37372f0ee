"""bench_gpu's training figures: per stage and gradient checkpointing on/off, the largest batch
that fits, its step time, samples/s, model FLOPs, MFU and peak memory; the cached-latents step."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from gpu_run import Run, Settings, free_memory, one_line


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
    search, best, b, stopped = [], 0, 1, "cap"
    while b <= s.batch_caps[stage]:
        row = try_batch(model, stage, b, s, res)
        search.append(row)
        if not row["fits"]:
            stopped = "oom"
            break
        best = b
        # the next batch costs ~2× this step for the search and (steps + warmup) more to time
        next_s = 2 * row["first_step_s"] * (2 + s.steps + s.warmup)
        if b < s.batch_caps[stage] and time.perf_counter() + next_s > stop:
            stopped = "time"  # a larger batch may fit: the figure is a lower bound of the best
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
        "search_stopped_by": stopped,  # cap, oom (best is the largest that fits) or time
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
        "mfu": flops / med / (s.peak_tflops * 1e12),
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
        if stage == 2:
            run.part("train/stage2/cached_latents", lambda: cached_latents(model, s, res, run), need_s=10)
    holder.clear()
    model = None
    free_memory()


def cached_latents(model, s: Settings, res: int, run: Run) -> dict:
    """The stage-2 step on cached VAE moments (--cache-latents: no VAE encoder on 17 frames) at
    the batch that fit with checkpointing on (the trainer's default), against the pixel step."""
    from bench_train import TrainStep, peak_memory_gb

    pixel = run.results["train"]["stage2"].get("ckpt_on", {})
    if "batch" not in pixel:
        return {"error": "no stage-2 checkpointing-on figure to compare with"}
    b, device = pixel["batch"], torch.device(s.device)
    model.enable_gradient_checkpointing()
    step = TrainStep(model, 2, b, s.frames, s.motion_frames, res, device, s.bf16, cached=True)
    med = statistics.median(step.time(s.steps, s.warmup))
    step = None
    free_memory(model)
    return {
        "batch": b,
        "gradient_checkpointing": True,
        "step_s_median": round(med, 5),
        "samples_per_s": round(b / med, 3),
        "speedup_vs_pixels": round(pixel["step_s_median"] / med, 3),
        "peak_memory_gb": round(peak_memory_gb(device), 3),
    }
