"""Sampler quality per step: DPM-Solver++, UniPC, Euler and DDIM at few steps vs DDIM-40 (EMO's).

    python benchmarks/bench_schedulers.py --run RUN --audio-model W2V --dataset DATASET
    python benchmarks/bench_schedulers.py --make-run WORK --train-minutes 2   # build a tiny run first

On a trained run (``--make-run`` builds one as emokit/demo.py does: `emokit ingest` + `emokit
label` of one shared talking clip, `emokit train` stages 1-2 of tiny-face with
pipelines/learn.toml for ``--train-minutes`` each), the portrait is the clip's first frame and the
audio its own speech. Every sampler renders the same seed; each row gives the frames (the count
must equal DDIM-40's), PSNR of all frames against DDIM-40, and wall time per frame (model only:
the audio and portrait are prepared once). The model's output type (eps / v / x0) and zero-SNR
flag come from the run, as in `emokit generate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from emokit.demo import LEARN_RECIPE, emokit, first_clip
from emokit.generate.generator import Generator, Speech
from emokit.generate.portrait import load_portrait
from emokit.generate.schedulers import make_scheduler
from emokit.train.checkpoint import final_checkpoint, latest_finished_stage
from emokit.train.noise import load_scheduler

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEO = SHARED / "videos" / "speaker_c_25fps_512.mp4"


def make_run(work: Path, minutes: float) -> tuple[Path, Path, Path]:
    """(run, wav2vec, dataset): the demo's one-speaker tiny-face run, ``minutes`` per stage 1-2."""
    from emokit.data.wav2vec import save_tiny_wav2vec

    w2v, ds, run = work / "w2v", work / "speaker", work / "run"
    if not w2v.exists():
        save_tiny_wav2vec(w2v)
    if not ds.exists():
        emokit("ingest", str(VIDEO), "-o", str(ds), "-q")
        emokit("label", str(ds), "--audio-model", str(w2v), "--size", "128", "-q")
    for stage in (1, 2):
        emokit(
            "train", str(ds), "--stage", str(stage), "--preset", "tiny-face", "--config", str(LEARN_RECIPE),
            "-o", str(run), "--max-steps", "1000000", "--time-limit", str(minutes), "-w", "1", "-q",
        )  # fmt: skip
    return run, w2v, ds


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def render(gen: Generator, portrait, speech: Speech, steps: int, cfg: float) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    frames = np.stack(list(gen.render(portrait, speech, steps=steps, cfg=cfg, seed=0)))
    return frames, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--audio-model", type=Path)
    ap.add_argument("--dataset", type=Path, help="the run's labelled dataset (portrait + audio)")
    ap.add_argument("--make-run", type=Path, help="build the tiny run under this folder first")
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=0.8, help="audio length rendered")
    ap.add_argument("--steps", default="10,20,25")
    ap.add_argument("--schedulers", default="ddim,dpmpp,unipc,euler")
    ap.add_argument("--reference-steps", type=int, default=40)
    ap.add_argument("--cfg", type=float, default=1.0, help="learn.toml's: no guidance")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.make_run:
        args.run, args.audio_model, args.dataset = make_run(args.make_run, args.train_minutes)
    if not (args.run and args.audio_model and args.dataset):
        ap.error("give --run, --audio-model and --dataset, or --make-run")
    out = args.run.parent / "bench_schedulers"
    out.mkdir(exist_ok=True)
    clip, first = first_clip(args.dataset, out, args.seconds)
    base = Generator(args.run, "cpu", args.audio_model, progress=False)
    portrait = load_portrait(first, size=base.native_size)
    speech = Speech.load(clip)
    speech = dataclasses.replace(speech, frames=min(speech.frames, round(args.seconds * 30)))
    print(
        f"run {args.run}: prediction_type {base.prediction_type}, "
        f"zero terminal SNR {bool(base.scheduler.config.rescale_betas_zero_snr)}, "
        f"{speech.frames} frames in clips of {base.frames}, {base.native_size} px, cfg {args.cfg:g}"
    )
    ref, ref_s = render(base, portrait, speech, args.reference_steps, args.cfg)
    rows = [("ddim", args.reference_steps, len(ref), float("inf"), ref_s / len(ref))]
    train = load_scheduler(final_checkpoint(args.run, latest_finished_stage(args.run)))
    for name in args.schedulers.split(","):
        # the sampler over the run's saved training schedule, as `emokit generate --scheduler` builds it
        sched = make_scheduler(name, train.config, base.prediction_type, base.spacing)
        gen = Generator.from_parts(
            base.model, base.alphas_cumprod, base.encoder, "cpu", frames=base.frames,
            motion_frames=base.motion_frames, progress=False, trained_stage=base.trained_stage,
            prediction_type=base.prediction_type, scheduler=sched,
        )  # fmt: skip
        for steps in map(int, args.steps.split(",")):
            frames, seconds = render(gen, portrait, speech, steps, args.cfg)
            rows.append((name, steps, len(frames), psnr(frames, ref), seconds / len(frames)))
            print(f"  {name} {steps}: {rows[-1][3]:.2f} dB", flush=True)
    print(f"\n| sampler | steps | frames | PSNR vs DDIM-{args.reference_steps} | s/frame |")
    print("|---|---|---|---|---|")
    for name, steps, n, db, spf in rows:
        shown = "reference" if db == float("inf") and steps == args.reference_steps else f"{db:.2f} dB"
        print(f"| {name} | {steps} | {n} | {shown} | {spf:.3f} |")


if __name__ == "__main__":
    main()
