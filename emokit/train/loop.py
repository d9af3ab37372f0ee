"""The EMO training loop: one stage per call, nanoGPT style — everything a step does is in view.

Stage 1 trains the image model (backbone + ReferenceNet + face locator) on (reference, target)
frame pairs; stage 2 adds temporal modules and audio-attention on 12-frame windows with 4 motion
frames; stage 3 trains temporal + speed layers. Stage k+1 starts from stage k's final EMA weights.
Every random draw of step s on rank r comes from a generator seeded with (seed, s, r), and sample
k of the data is a pure function of (seed, k), so a resumed run continues exactly where the
uninterrupted one would have gone. Multi-GPU/CPU via `accelerate launch` or `torchrun` (DDP).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.tracking import GeneralTracker
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from emokit import __version__
from emokit.config import TrainConfig, as_dict
from emokit.data.atomic import atomic_path
from emokit.models import EMOConfig, EMOModel
from emokit.models.stages import AUDIO_STARTS, group_parameters, open_audio_path
from emokit.train import checkpoint as ckpt
from emokit.train.dataset import ClipDataset, IndexSummary, StepBatches, index_clips
from emokit.train.ema import EMA
from emokit.train.accumulate import accumulate_gradients, micro_steps
from emokit.train.latent_cache import build_cache, cache_root, load_moments
from emokit.train.loss import DiffusionLoss
from emokit.train.lr_schedule import set_lr
from emokit.train.noise import load_scheduler, training_scheduler
from emokit.train.precision import MIXED_PRECISION, resolve_mixed_precision
from emokit.train.trackers import (
    TrackerError,
    check_installed,
    finish_trackers,
    flat_config,
    make_trackers,
    parse_log_with,
)

AUDIO_GROUPS = ("audio_proj", "backbone.audio_attention")  # parameter groups audio_lr_scale speeds up
PRESETS: dict[str, Callable[[], EMOConfig]] = {
    "tiny": EMOConfig.tiny,
    "tiny-face": EMOConfig.tiny_face,
    "sd15": EMOConfig.sd15,
}
LOG_FIELDS = ["step", "loss", "lr", "step_seconds"]


class TrainError(ValueError):
    """A training run that cannot start as asked (missing previous stage, wrong flags, …)."""


@dataclass
class TrainResult:
    """What one `train` call did (rank 0's view; losses are means over ranks)."""

    stage: int
    run_dir: Path
    start_step: int  # 0 for a fresh stage, the checkpoint's step when resumed
    step: int  # step reached
    already_finished: bool  # the stage had finished before this call; nothing was trained
    final: Path | None
    losses: list[float]
    seconds: float
    index: IndexSummary | None
    world_size: int
    source: str  # where the weights came from
    main: bool = True  # this process is rank 0 (the one that logs and writes)


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, step, rank): independent streams, no global RNG."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def train(
    dataset: str | Path,
    run_dir: str | Path,
    stage: int,
    cfg: TrainConfig,
    *,
    init: str | None = None,
    motion_adapter: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
    time_limit_s: float | None = None,
) -> TrainResult:
    """Train ``stage`` of the run in ``run_dir`` on the shards of ``dataset``; resume if possible.

    Rerunning the same call after a crash continues from the last checkpoint; a finished stage
    returns at once with ``already_finished``. ``time_limit_s`` ends the stage early (a finished
    stage at the step reached) once this call has trained that long: a wall-clock budget, for
    benchmarks and scheduler time limits; the step reached is in the result and train.json.
    """
    _validate(stage, cfg)
    if stage > 1 and (init or motion_adapter):
        raise TrainError(
            f"--init/--motion-adapter apply to stage 1; stage {stage} starts from "
            f"{ckpt.stage_dir(run_dir, stage - 1) / ckpt.FINAL}"
        )
    run_dir, t0 = Path(run_dir), time.perf_counter()
    sdir = ckpt.stage_dir(run_dir, stage)
    final = ckpt.verified_final(run_dir, stage)  # a damaged final is no finished stage
    resume = None if final is not None else ckpt.latest_usable_checkpoint(sdir)
    ckpt.check_recipe(final or resume, as_dict(cfg))
    if final is not None:
        done = ckpt.read_info(final)
        if int(os.environ.get("RANK", "0")) == 0:  # a kill right after `final` left step folders
            ckpt.prune(sdir, keep=None)
        return TrainResult(
            stage,
            run_dir,
            done["step"],
            done["step"],
            True,
            final,
            [],
            time.perf_counter() - t0,
            None,
            done.get("world_size", 1),
            str(final),
            main=int(os.environ.get("RANK", "0")) == 0,
        )

    start = ckpt.read_info(resume)["step"] if resume else 0
    trackers = make_trackers(parse_log_with(cfg.log_with), run_dir, stage, start)
    acc = _accelerator(device, cfg, trackers)
    main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
    # ---- data (label-only reads) ------------------------------------------------------------
    clips, summary = index_clips(dataset, stage, cfg.frames, cfg.motion_frames, cfg.drop_flags)
    if not clips:
        raise TrainError(f"no usable clips for stage {stage} in {dataset}: {_describe(summary)}")
    audio_dims = {tuple(c.audio_shape[1:]) for c in clips if c.audio_shape}
    if len(audio_dims) > 1:
        raise TrainError(
            f"shards mix audio token shapes (layers, dim) {sorted(audio_dims)}; "
            f"label the whole dataset with one audio model"
        )

    # ---- model: resume > previous stage > --init > fresh ------------------------------------
    model, origin, source, preset = _load_model(
        run_dir, stage, cfg, resume, init, motion_adapter, next(iter(audio_dims), None)
    )
    want = (model.config.audio_layers, model.config.audio_dim)
    if stage > 1 and audio_dims and audio_dims != {want}:
        raise TrainError(
            f"the shards' audio tokens have (layers, dim)={audio_dims.pop()} but "
            f"the model (from {source}) expects {want}; train on data labelled "
            f"with the same audio model as stage 1"
        )
    chosen = {id(p) for p in model.set_stage(stage)}  # the model decides what trains per stage
    names = [n for n, p in model.named_parameters() if id(p) in chosen]  # fixed order: EMA, optim
    trainable = [p for n, p in model.named_parameters() if id(p) in chosen]
    if cfg.gradient_checkpointing and acc.device.type == "cuda":
        model.enable_gradient_checkpointing()
    scheduler = (
        load_scheduler(origin) if origin else training_scheduler(cfg.prediction_type, cfg.zero_terminal_snr)
    )
    res = model.config.sample_size * model.config.vae_factor
    workers = _default_workers(acc) if workers is None else workers
    latents = None
    if cfg.cache_latents:  # each clip through the VAE once (resumable); steps sample from moments
        if model.config.latent != "kl":
            raise TrainError("cache_latents needs a KL-VAE preset; the pixel latent has nothing to cache")
        model.vae.to(acc.device)
        folder = build_cache(model, clips, res, cache_root(dataset), rank=rank, world=world, log=log)
        acc.wait_for_everyone()
        latents = partial(load_moments, folder)
    loader = DataLoader(
        ClipDataset(
            clips,
            stage,
            res,
            cfg.frames,
            cfg.motion_frames,
            cfg.seed,
            model.config.audio_window,
            model.config.speed_window,
            latents=latents,
        ),
        batch_sampler=StepBatches(cfg.batch_size, start * cfg.grad_accum, rank, world),  # micro-steps
        num_workers=workers,
        pin_memory=acc.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )

    # ---- optimizer, EMA, DDP ---------------------------------------------------------------
    opt = torch.optim.AdamW(_param_groups(model, trainable, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]  # warm-up scales these; a pure function of step
    net = DiffusionLoss(
        model,
        scheduler,
        stage,
        cfg.cond_dropout,
        cfg.cond_drop_both,
        cfg.motion_dropout,
        face_weight=cfg.face_loss_weight,
        mouth_weight=cfg.mouth_loss_weight,
        motion_noise=cfg.motion_noise,
    )
    net, opt = acc.prepare(net, opt)
    ema = EMA(list(zip(names, trainable)), cfg.ema_decay)
    if resume:
        state = ckpt.load_state(resume)
        opt.load_state_dict(state["optimizer"])
        ema.load(ckpt.load_ema(resume), int(state["ema_step"]))
        if main:
            log(f"stage {stage}: resuming from step {start} ({resume})")
    if main:
        log(
            f"stage {stage}: {summary.usable} clips ({_describe(summary)}), preset {preset} at "
            f"{res}px, {sum(p.numel() for p in trainable) / 1e6:.2f}M trainable params, "
            f"world {world}, weights from {source}"
        )
        ckpt.prune(sdir, keep=resume)
    logger = _CsvLog(sdir / "log.csv", start) if main else None
    if trackers:
        acc.init_trackers("emokit", config=flat_config({"stage": stage, **as_dict(cfg)}))
    # imported here: samples uses emokit.generate, which imports emokit.train (no import cycle)
    from emokit.train.samples import SampleWriter

    sampler = SampleWriter.for_stage(cfg, clips, res, want, scheduler, stage, sdir, log) if main else None

    def info(step: int, finished: bool) -> dict[str, Any]:
        return {
            "stage": stage,
            "step": step,
            "max_steps": cfg.max_steps,
            "finished": finished,
            "preset": preset,
            "source": source,
            "dataset": str(dataset),
            "world_size": world,
            "clips": summary.usable,
            "resolution": res,
            "train_config": as_dict(cfg),
            "emokit_version": __version__,
        }

    def save(step: int, finished: bool) -> Path:
        """All ranks call this; rank 0 writes (train.json last), the others wait for it."""
        acc.wait_for_everyone()
        dest = sdir / (ckpt.FINAL if finished else ckpt.step_name(step))
        if main:
            state = (
                None
                if finished
                else {"optimizer": opt.state_dict(), "step": step, "ema_step": ema.step_count}
            )
            ckpt.write_checkpoint(
                dest, acc.unwrap_model(net).model, ema.state_dict(), scheduler, info(step, finished), state
            )
            ckpt.prune(sdir, keep=None if finished else dest)
            log(f"checkpoint step {step}: {dest}")
        acc.wait_for_everyone()
        return dest

    # ---- the loop --------------------------------------------------------------------------
    step, losses = start, []
    gen = torch.Generator(acc.device)
    bar = tqdm(
        total=cfg.max_steps,
        initial=start,
        desc=f"stage {stage}",
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    net.train()
    batches = iter(loader)
    pending, tick = [], time.perf_counter()

    while step < cfg.max_steps:
        seeds = [step_seed(cfg.seed, k, rank) for k in micro_steps(step, cfg.grad_accum)]
        loss = accumulate_gradients(acc, net, batches, seeds, gen)
        lr = set_lr(opt, base_lrs, step, cfg.warmup_steps)
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()
        step += 1
        pending.append(loss)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            mean = acc.reduce(torch.stack(pending).mean(), reduction="mean").item()
            seconds = (time.perf_counter() - tick) / len(pending)
            losses.append(mean)
            if logger:
                logger.write(step, mean, lr, seconds)
            acc.log({"loss": mean, "lr": lr, "step_seconds": seconds}, step=step)
            bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
            pending, tick = [], time.perf_counter()
        bar.update(1)
        if cfg.sample_every and step % cfg.sample_every == 0:  # rank 0 renders, the others wait
            if sampler is not None:
                sampler.write(acc, acc.unwrap_model(net).model, ema, step)
            acc.wait_for_everyone()
        if step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
            save(step, finished=False)
        if time_limit_s is not None and _all_past(acc, time.perf_counter() - t0 >= time_limit_s):
            if main:
                log(f"stage {stage}: time limit of {time_limit_s:.0f} s reached at step {step}")
            break
    bar.close()
    if pending:  # a time limit stopped between log rows
        mean = acc.reduce(torch.stack(pending).mean(), reduction="mean").item()
        losses.append(mean)
        seconds = (time.perf_counter() - tick) / len(pending)
        if logger:
            logger.write(step, mean, opt.param_groups[0]["lr"], seconds)
        acc.log({"loss": mean, "lr": opt.param_groups[0]["lr"], "step_seconds": seconds}, step=step)
    if logger:
        logger.close()
    final = save(step, finished=True)
    finish_trackers(acc)
    return TrainResult(
        stage,
        run_dir,
        start,
        step,
        False,
        final,
        losses,
        time.perf_counter() - t0,
        summary,
        world,
        source,
        main,
    )


def _param_groups(model: EMOModel, params: list[nn.Parameter], cfg: TrainConfig) -> list[dict[str, Any]]:
    """One AdamW group, or two when the audio layers (projection + audio-attention) get their own
    learning rate (``audio_lr_scale``): they start from scratch in stage 2 while the rest is tuned."""
    if cfg.audio_lr_scale == 1.0:
        return [{"params": params}]
    audio = {id(p) for g in AUDIO_GROUPS for _, p in group_parameters(model, g)}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if id(p) not in audio]},
        {"params": [p for p in params if id(p) in audio], "lr": cfg.lr * cfg.audio_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def _all_past(acc: Accelerator, past: bool) -> bool:
    """True on every rank as soon as any rank is past its time limit (ranks stop together)."""
    flag = torch.tensor(float(past), device=acc.device)
    return bool(acc.reduce(flag, reduction="sum").item() > 0)


def _validate(stage: int, cfg: TrainConfig) -> None:
    if stage not in (1, 2, 3):
        raise TrainError(f"--stage must be 1, 2 or 3, got {stage}")
    if cfg.preset not in PRESETS:
        raise TrainError(f"--preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    for name in ("max_steps", "batch_size", "checkpoint_every", "log_every", "frames", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.motion_frames < 0 or cfg.lr <= 0 or cfg.audio_start not in AUDIO_STARTS:
        raise TrainError(f"need motion_frames >= 0, lr > 0 and audio_start one of {', '.join(AUDIO_STARTS)}")
    drops = (cfg.cond_dropout, cfg.cond_drop_both, cfg.motion_dropout)
    if min(drops) < 0 or 2 * cfg.cond_dropout + cfg.cond_drop_both > 1 or cfg.motion_dropout > 1:
        raise TrainError(
            "need cond_dropout, cond_drop_both, motion_dropout >= 0, "
            "2·cond_dropout + cond_drop_both <= 1 and motion_dropout <= 1"
        )
    if min(cfg.warmup_steps, cfg.sample_every) < 0 or min(cfg.sample_steps, cfg.sample_frames) < 1:
        raise TrainError("need warmup_steps, sample_every >= 0 and sample_steps, sample_frames >= 1")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise TrainError(
            f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {cfg.mixed_precision!r}"
        )
    try:
        check_installed(parse_log_with(cfg.log_with))
    except TrackerError as e:
        raise TrainError(str(e)) from None


def _accelerator(device: str, cfg: TrainConfig, trackers: list[GeneralTracker]) -> Accelerator:
    """DDP (gloo on CPU, NCCL on GPU) when launched by accelerate/torchrun, ``cfg``'s autocast
    (auto: bf16 on CUDA), gradient accumulation and trackers (rank 0 logs)."""
    if device not in ("auto", "cpu", "cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    cpu = device == "cpu" or not torch.cuda.is_available()
    try:
        precision = resolve_mixed_precision(cfg.mixed_precision, cuda=not cpu)
    except ValueError as e:
        raise TrainError(str(e)) from None
    return Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=trackers or None,
        # Samples whose audio/reference is dropped can leave a parameter without gradient.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _load_model(
    run_dir: Path,
    stage: int,
    cfg: TrainConfig,
    resume: Path | None,
    init: str | None,
    motion_adapter: str | None,
    audio_dims: tuple[int, ...] | None,
) -> tuple[EMOModel, Path | None, str, str]:
    """(model, checkpoint folder it came from, description of its weights, preset name).

    A fresh model takes its audio input size (wav2vec layers × dim) from the shards: that is a
    property of how the data was labelled, not of the model size.
    """
    if resume is not None:  # raw weights: training continues exactly; EMA is restored separately
        preset = ckpt.read_info(resume)["preset"]
        return ckpt.load_checkpoint_model(resume, ema=False), resume, str(resume), preset
    if stage > 1:
        prev = ckpt.final_checkpoint(run_dir, stage - 1)
        if prev is None:
            raise TrainError(
                f"stage {stage} starts from stage {stage - 1}'s final weights, but "
                f"{ckpt.stage_dir(run_dir, stage - 1) / ckpt.FINAL} does not exist: run "
                f"`emokit train DATASET --stage {stage - 1} -o {run_dir}` first"
            )
        preset, model = ckpt.read_info(prev)["preset"], ckpt.load_checkpoint_model(prev, ema=True)
        if stage == 2 and cfg.audio_start == "zero_output":  # output unchanged: see open_audio_path
            open_audio_path(model, cfg.seed)
        return model, prev, str(prev), preset
    config = PRESETS[cfg.preset]()
    if audio_dims is not None:
        config = replace(config, audio_layers=audio_dims[0], audio_dim=audio_dims[1])
    if init is not None:
        return EMOModel.from_sd15(init, config, motion_adapter), None, str(init), cfg.preset
    if motion_adapter is not None:
        raise TrainError("--motion-adapter needs --init (an SD1.5 folder the adapter fits)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = EMOModel(config)
    return model, None, f"random init (preset {cfg.preset}, seed {cfg.seed})", cfg.preset


def _default_workers(acc: Accelerator) -> int:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
    return max(1, (os.cpu_count() or 1) // max(1, local))


def _describe(s: IndexSummary) -> str:
    dropped = ", ".join(f"{reason} {n}" for reason, n in s.dropped.most_common())
    return f"{s.rows} rows in {s.shards} shards, {s.rejected} rejected by label" + (
        f", dropped: {dropped}" if dropped else ""
    )


class _CsvLog:
    """RUN/stage{k}/log.csv; on resume, rows past the checkpoint's step are dropped (they will be
    trained again), so the file always describes one consistent run. That rewrite is atomic (a
    run killed during it keeps the old log); new rows are appended as training goes."""

    def __init__(self, path: Path, start: int) -> None:
        rows = []
        if path.is_file() and start > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            head = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            head.writeheader()
            head.writerows(rows)
        self.file = open(path, "a", newline="")  # noqa: SIM115 — lives as long as the run
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self.writer.writerow(
            {"step": step, "loss": f"{loss:.6f}", "lr": f"{lr:.3g}", "step_seconds": f"{seconds:.4f}"}
        )
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def with_overrides(cfg: TrainConfig, **values: Any) -> TrainConfig:
    """``cfg`` with the non-None ``values`` replaced (CLI flags over the recipe)."""
    return replace(cfg, **{k: v for k, v in values.items() if v is not None})
