"""One EMO stage-2 training step: time, model FLOPs, MFU and peak memory, on CPU or CUDA.

    .venv/bin/python benchmarks/bench_train.py                        # tiny preset (CPU default)
    .venv/bin/python benchmarks/bench_train.py --preset sd15          # EMO size (CUDA default)
    .venv/bin/python benchmarks/bench_train.py --dataset DATASET --workers 8   # + loader rate

The step is the trainer's own (emokit.train.loss.DiffusionLoss + AdamW + EMA): VAE encode of
f + n + 1 frames, ReferenceNet on reference + motion frames, backbone with temporal and audio
layers, backward, optimizer. bf16 autocast and gradient checkpointing on CUDA unless disabled.
FLOPs come from torch.utils.flop_counter.FlopCounterMode on one step without gradient
checkpointing (model FLOPs: recomputation is not useful work); MFU = FLOPs / median step time /
--peak-tflops (790 = bf16 8192³ matmuls measured on the lent H200; 989 is the datasheet's).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from emokit.config import TrainConfig
from emokit.models import EMOModel
from emokit.train.ema import EMA
from emokit.train.loop import PRESETS, step_seed
from emokit.train.loss import DiffusionLoss
from emokit.train.noise import training_scheduler


PEAK_TFLOPS = 790.0  # bf16 8192³ matmuls measured on the lent H200 (datasheet: 989 dense)


def synthetic_batch(
    model: EMOModel, b: int, f: int, n: int, res: int, device, stage: int = 2, cached: bool = False
) -> dict:
    """Random inputs of a training batch of ``stage`` (the data path is measured separately, see
    --dataset): stage 1 is one target frame + reference, stages 2-3 add motion frames, audio and
    speed, as emokit.train.dataset.ClipDataset delivers them; ``cached``: VAE moments in place of
    the pixels, as with --cache-latents (no VAE encoder in the step)."""
    c = model.config
    g = torch.Generator().manual_seed(0)

    def px(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) * 2 - 1).to(device)

    mask = torch.zeros(b, 1, res, res)
    mask[:, :, res // 4 : 3 * res // 4, res // 4 : 3 * res // 4] = 1
    if stage == 1:
        frame, reference = px(b, 1, 3, res, res), px(b, 3, res, res)
        batch = {"frames": frame, "reference": reference, "face_mask": mask.to(device)}
    else:
        batch = {
            "frames": px(b, f, 3, res, res),
            "motion": px(b, n, 3, res, res),
            "reference": px(b, 3, res, res),
            "audio": torch.randn(b, f, c.audio_layers, c.audio_dim, generator=g).to(device),
            "speed": torch.rand(b, f, generator=g).to(device),
            "face_mask": mask.to(device),
        }
    if cached:  # moments (mean ‖ log-variance) [.., 2C, h, w] in place of the pixels
        side = res // c.vae_factor
        for key in ("frames", "motion", "reference"):
            if key in batch:
                lead = batch.pop(key).shape[:-3]
                moments = torch.randn(*lead, 2 * c.latent_channels, side, side, generator=g)
                batch[f"{key}_moments"] = moments.to(device)
    return batch


class TrainStep:
    """The trainer's own step (DiffusionLoss + grad clip + AdamW + EMA, as emokit.train.loop
    builds them) on one synthetic batch of ``stage``: what every training figure here times."""

    def __init__(
        self,
        model: EMOModel,
        stage: int,
        b: int,
        f: int,
        n: int,
        res: int,
        device,
        bf16: bool,
        cached: bool = False,
    ) -> None:
        chosen = {id(p) for p in model.set_stage(stage)}
        named = [(k, p) for k, p in model.named_parameters() if id(p) in chosen]
        self.model, self.device, self.bf16, self.batch_size = model, torch.device(device), bf16, b
        self.params = [p for _, p in named]
        self.net = DiffusionLoss(model, training_scheduler(), stage=stage, cond_dropout=0.05).train()
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)
        self.ema = EMA(named, 0.9999)
        self.batch = synthetic_batch(model, b, f, n, res, self.device, stage, cached)
        self.gen = torch.Generator(self.device)

    def __call__(self, i: int) -> float:
        self.gen.manual_seed(step_seed(0, i, 0))
        autocast = torch.autocast("cuda", torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            loss = self.net(self.batch, self.gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update()
        return loss.item()  # syncs the device: the step is done

    def count_flops(self) -> tuple[float, str]:
        """FLOPs of one step without gradient checkpointing (model FLOPs: recomputation is not
        useful work), or with it where the step does not fit otherwise (said in the label)."""
        checkpointing = self.model.temporal.gradient_checkpointing
        self.model.disable_gradient_checkpointing()
        counter, what = FlopCounterMode(display=False), "model FLOPs"
        try:
            with counter:
                self(0)
        except torch.cuda.OutOfMemoryError:  # no room without checkpointing: count with recompute
            self.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            self.model.enable_gradient_checkpointing()
            counter, what = FlopCounterMode(display=False), "FLOPs incl. checkpoint recompute"
            with counter:
                self(0)
        finally:
            if checkpointing:
                self.model.enable_gradient_checkpointing()
            else:
                self.model.disable_gradient_checkpointing()
        return float(counter.get_total_flops()), what

    def time(self, steps: int, warmup: int) -> list[float]:
        """Seconds of each of ``steps`` steps after ``warmup`` untimed ones; peak memory counts
        from here (read it with ``peak_memory_gb``)."""
        for i in range(warmup):
            self(i + 1)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for i in range(steps):
            t = time.perf_counter()
            self(warmup + i + 1)
            times.append(time.perf_counter() - t)
        return times


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def loader_rate(dataset: Path, res: int, f: int, n: int, workers: int, samples: int) -> float:
    """Stage-2 samples per second the DataLoader delivers from real shards."""
    from torch.utils.data import DataLoader

    from emokit.train.dataset import ClipDataset, StepBatches, index_clips

    clips, _ = index_clips(dataset, 2, f, n, TrainConfig().drop_flags)
    loader = DataLoader(
        ClipDataset(clips, 2, res, f, n),
        batch_sampler=StepBatches(1),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t = time.perf_counter()
    for _ in range(samples):
        next(it)
    return samples / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sd15" if cuda else "tiny")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--resolution", type=int, help="pixels (default: the preset's)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--motion-frames", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true", help="fp32 on CUDA too")
    ap.add_argument("--no-grad-ckpt", action="store_true", help="no gradient checkpointing")
    ap.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="device peak (H200 bf16)")
    ap.add_argument("--dataset", type=Path, help="also measure the DataLoader on these shards")
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = PRESETS[args.preset]()
    model = EMOModel(config).to(device)
    res = args.resolution or config.sample_size * config.vae_factor
    b, f, n = args.batch_size, args.frames, args.motion_frames
    bf16 = device.type == "cuda" and not args.no_bf16
    ckpt = device.type == "cuda" and not args.no_grad_ckpt
    step = TrainStep(model, 2, b, f, n, res, device, bf16)
    params = step.params
    flops, what = step.count_flops()
    if ckpt:
        model.enable_gradient_checkpointing()
    times = step.time(args.steps, args.warmup)
    med = statistics.median(times)
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"preset {args.preset} on {name} ({torch.get_num_threads()} threads)"
        if device.type == "cpu"
        else f"preset {args.preset} on {name}"
    )
    print(
        f"  stage-2 step: batch {b} x ({n} motion + {f}) frames at {res}px, "
        f"bf16 {bf16}, gradient checkpointing {ckpt}"
    )
    print(f"  params {total / 1e6:.1f}M, trainable {trainable / 1e6:.1f}M")
    print(
        f"  step time median {med * 1000:.1f} ms over {args.steps} steps "
        f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})"
    )
    print(
        f"  {what}/step {flops / 1e9:.1f} GFLOP -> {flops / med / 1e12:.3f} TFLOP/s, "
        f"MFU {100 * flops / med / (args.peak_tflops * 1e12):.2f}% of {args.peak_tflops:g} TFLOP/s"
    )
    print(
        f"  peak memory {peak_memory_gb(device):.2f} GiB "
        f"({'max_memory_allocated' if device.type == 'cuda' else 'process max RSS'})"
    )
    if args.dataset:
        rate = loader_rate(args.dataset, res, f, n, args.workers, samples=max(8, 2 * args.workers))
        print(
            f"  DataLoader ({args.workers} workers): {rate:.1f} samples/s vs "
            f"{b / med:.1f} samples/s consumed by training"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
