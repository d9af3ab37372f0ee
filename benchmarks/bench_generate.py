"""Generation speed, memory and MFU: `Generator` end to end (portrait + audio → mp4), CPU or CUDA.

    .venv/bin/python benchmarks/bench_generate.py                                  # tiny, CPU
    .venv/bin/python benchmarks/bench_generate.py --preset sd15 --size 512 --steps 40   # EMO, CUDA
    .venv/bin/python benchmarks/bench_generate.py --compare-audio                  # 8 s vs 60 s

The model has RANDOM weights of the preset's size (EMOModel(EMOConfig.<preset>())), the wav2vec
model too (tiny for `tiny`, wav2vec2-base size for `sd15`): same cost as trained weights. The
timed run is the whole call: portrait crop, wav2vec over the audio, clip after clip of DDIM +
CFG, VAE decode, H.264/AAC encode. Reports seconds per frame, frames/s, peak memory (RSS on CPU,
torch.cuda.max_memory_allocated on GPU) and, on GPU, MFU = model FLOPs (FlopCounterMode over one
clip, scaled by the clip count) / wall time / --peak-tflops (790 = bf16 8192³ matmuls measured
on the lent H200; 989 is the H100/H200 datasheet's dense bf16).
--compare-audio runs the 8 s and the 60 s speech files in fresh processes and prints the ratio
of their peak memory (flat in audio length is the target); --compare-long does the same for 10 s
and 10 min (the 60 s file cut or repeated to length with --audio-seconds).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from emokit.data.wav2vec import AudioEncoder, base_size_wav2vec, save_tiny_wav2vec
from emokit.generate.generator import FPS, Generator, Speech
from emokit.generate.portrait import load_portrait
from emokit.models import EMOConfig, EMOModel
from emokit.train.noise import training_scheduler

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AUDIO = {
    "8s": SHARED / "audio" / "speech_en_8s_16k_stereo.wav",
    "60s": SHARED / "audio" / "speech_60s_16k_mono.wav",
}
PORTRAIT = SHARED / "portraits" / "woman_frontal.jpg"
PEAK_TFLOPS = 790.0  # bf16 8192³ matmuls measured on the lent H200 (datasheet: 989 dense)


def build(
    preset: str, device: torch.device, dtype: str, work: Path, frames: int, w2v_size: str = "auto"
) -> Generator:
    """A Generator around a random-weight model of ``preset`` and a matching random wav2vec
    (``w2v_size`` "base": wav2vec2-base's 12 × 768 tokens whatever the preset)."""
    if preset == "tiny" and w2v_size != "base":
        w2v = save_tiny_wav2vec(work / "w2v")
    else:
        w2v = base_size_wav2vec(work / "w2v")
    encoder = AudioEncoder(w2v, device=device)
    base = EMOConfig.tiny() if preset == "tiny" else EMOConfig.sd15()
    config = EMOConfig.from_dict(
        {**base.to_dict(), "audio_layers": encoder.num_layers, "audio_dim": encoder.dim}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = EMOModel(config)
    alphas = training_scheduler().alphas_cumprod
    return Generator.from_parts(model, alphas, encoder, device, dtype=dtype, frames=frames, progress=False)


def peak_memory_gb(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


class _Precomputed:
    """Stands in for the AudioEncoder while FLOPs are counted: FlopCounterMode breaks wav2vec's
    weight-norm parametrization, and wav2vec is not EMO's model FLOPs anyway."""

    def __init__(self, tokens, num_layers: int, dim: int) -> None:
        self.tokens, self.num_layers, self.dim = tokens, num_layers, dim

    def __call__(self, wav16k, num_frames: int, fps: float = FPS):
        return self.tokens[:num_frames]

    def stream(self, wav16k, num_frames: int, fps: float = FPS):
        return self.tokens[:num_frames]


def clip_flops(gen: Generator, portrait, speech: Speech, steps: int, cfg: float) -> float:
    """Model FLOPs of rendering exactly one clip: VAE encode, ReferenceNet, DDIM + CFG, decode."""
    one = Speech(speech.wav16k[: gen.frames * 16000 // FPS], speech.mux, gen.frames / FPS, gen.frames)
    encoder = gen.encoder
    gen.encoder = _Precomputed(encoder(one.wav16k, one.frames), encoder.num_layers, encoder.dim)
    try:
        with FlopCounterMode(display=False) as counter:
            for _ in gen.render(portrait, one, steps=steps, cfg=cfg):
                pass
    finally:
        gen.encoder = encoder
    return float(counter.get_total_flops())


def fit_length(speech: Speech, seconds: float) -> Speech:
    """``speech`` cut or repeated to exactly ``seconds`` (long-audio memory runs from a 60 s file)."""
    from emokit.data.wav2vec import SAMPLE_RATE
    from emokit.generate.generator import MUX_SR

    def fit(x, rate: int):
        n = round(seconds * rate)
        reps = -(-n // x.shape[-1])
        return np.tile(x, (1,) * (x.ndim - 1) + (reps,))[..., :n]

    frames = -(-round(seconds * SAMPLE_RATE) * FPS // SAMPLE_RATE)
    return Speech(fit(speech.wav16k, SAMPLE_RATE), fit(speech.mux, MUX_SR), seconds, frames)


def run_once(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="emokit-bench-gen-") as tmp:
        return _run_in(args, Path(tmp))


def _run_in(args: argparse.Namespace, work: Path) -> dict:
    device = torch.device(args.device)
    gen = build(args.preset, device, args.dtype, work, args.frames, args.w2v)
    portrait = load_portrait(PORTRAIT, size=args.size)
    speech = Speech.load(args.audio)
    if args.audio_seconds:
        speech = fit_length(speech, args.audio_seconds)
    r = measure(
        gen,
        portrait,
        speech,
        args.steps,
        args.cfg,
        clips=args.clips,
        tokens_up_front=args.tokens_up_front,
        count_flops=device.type == "cuda" and not args.no_flops,
        peak_tflops=args.peak_tflops,
        out_mp4=work / "out.mp4",
    )
    return {"preset": args.preset, "audio": Path(args.audio).name, "w2v": args.w2v, **r}


def reset_peak_rss() -> bool:
    """Start the process's peak RSS afresh (Linux: "5" to clear_refs resets VmHWM), so two runs
    in one process compare; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(
    gen: Generator,
    portrait,
    speech: Speech,
    steps: int,
    cfg: float,
    *,
    clips: int = 0,
    tokens_up_front: bool = False,
    count_flops: bool = False,
    peak_tflops: float = PEAK_TFLOPS,
    out_mp4: Path | None = None,
    deadline: float | None = None,
    reset_rss: bool = False,
) -> dict:
    """Time one generation after a one-clip warm-up: the whole call into ``out_mp4`` (portrait to
    mp4), or with ``clips`` (or no ``out_mp4``) the frames of the first ``clips`` clips (0: all)
    without the mp4; ``deadline`` (perf_counter seconds) stops a frames-only run early;
    ``reset_rss``: peak RSS from after the warm-up (several runs in one process), not the
    process's whole life (model building included) as --compare-audio's fresh processes report."""
    device = gen.device
    # Warm-up (kernel selection, allocator) on one clip, not timed.
    warm = Speech(speech.wav16k[: gen.frames * 16000 // FPS], speech.mux, gen.frames / FPS, gen.frames)
    for _ in gen.render(portrait, warm, steps=min(steps, 2), cfg=cfg):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_reset = reset_rss and reset_peak_rss()
    encoder = gen.encoder
    if tokens_up_front:  # the pre-streaming path: every token of the track at the start
        gen.encoder = _Precomputed(encoder(speech.wav16k, speech.frames), encoder.num_layers, encoder.dim)
    t = time.perf_counter()
    try:
        if clips or out_mp4 is None:  # frames only (memory of long audio without the encoder)
            frames = 0
            for _ in gen.render(portrait, speech, steps=steps, cfg=cfg, seed=0):
                frames += 1
                if frames == clips * gen.frames or (deadline is not None and time.perf_counter() > deadline):
                    break
            r = argparse.Namespace(
                audio_seconds=speech.seconds, frames=frames, clips=-(-frames // gen.frames)
            )
        else:
            r = gen(portrait, speech, out_mp4, steps=steps, cfg=cfg, seed=0)
    finally:
        gen.encoder = encoder
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t
    result = {
        "device": str(device),
        "dtype": str(gen.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "size": portrait.size,
        "steps": steps,
        "cfg": cfg,
        "frames_per_clip": gen.frames,
        "tokens": "up-front" if tokens_up_front else "streamed",
        "audio_s": round(r.audio_seconds, 2),
        "frames": r.frames,
        "clips": r.clips,
        "seconds": round(seconds, 3),
        "s_per_frame": round(seconds / r.frames, 4),
        "frames_per_s": round(r.frames / seconds, 3),
        "peak_rss_since_warmup": rss_reset,
        **{k: round(v, 3) for k, v in peak_memory_gb(device).items()},
    }
    if count_flops:
        flops = clip_flops(gen, portrait, speech, steps, cfg) * r.clips
        result["tflops_total"] = round(flops / 1e12, 2)
        result["achieved_tflops"] = round(flops / seconds / 1e12, 2)
        result["mfu"] = round(flops / seconds / (peak_tflops * 1e12), 4)
    return result


def compare_audio(args: argparse.Namespace, cases: dict[str, tuple[Path, float]]) -> None:
    """The same settings on two audio lengths, each in a fresh process (peak RSS is per
    process); prints both and the long / short memory ratios."""
    rows = {}
    for tag, (path, seconds) in cases.items():
        cmd = [
            sys.executable,
            __file__,
            "--json",
            "--audio",
            str(path),
            "--audio-seconds",
            str(seconds),
            "--preset",
            args.preset,
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--cfg",
            str(args.cfg),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--frames",
            str(args.frames),
            "--threads",
            str(args.threads),
            "--no-flops",
            "--clips",
            str(args.clips),
            "--w2v",
            args.w2v,
            *(["--tokens-up-front"] if args.tokens_up_front else []),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[tag] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[tag]))
    short, long = list(rows)
    for key in ("peak_rss_gb", "peak_cuda_gb"):
        if key in rows[short]:
            print(
                f"{key}: {short} {rows[short][key]:.3f}, {long} {rows[long][key]:.3f}, "
                f"ratio {rows[long][key] / rows[short][key]:.3f}, "
                f"difference {(rows[long][key] - rows[short][key]) * 1024:.0f} MB"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--size", type=int, default=None, help="default: 64 (tiny), 512 (sd15)")
    ap.add_argument("--steps", type=int, default=None, help="default: 4 (tiny), 40 (sd15)")
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--frames", type=int, default=12, help="frames per clip (EMO: 12)")
    ap.add_argument("--audio", default=str(AUDIO["8s"]))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto = bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="GPU peak (H200 bf16, measured)")
    ap.add_argument("--compare-audio", action="store_true", help="8 s vs 60 s peak memory")
    ap.add_argument("--compare-long", action="store_true", help="10 s vs 10 min peak memory")
    ap.add_argument("--audio-seconds", type=float, default=0.0, help="cut or repeat the audio to this length")
    ap.add_argument("--clips", type=int, default=0, help="render only the first N clips (no mp4)")
    ap.add_argument("--w2v", choices=["auto", "base"], default="auto", help="base: 12 x 768 tokens")
    ap.add_argument("--tokens-up-front", action="store_true", help="all tokens at the start (the old path)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (GPU)")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 avoids OpenMP spinning when "
        "other processes share the cores",
    )
    args = ap.parse_args()
    args.size = args.size or (64 if args.preset == "tiny" else 512)
    args.steps = args.steps or (4 if args.preset == "tiny" else 40)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare_audio:
        compare_audio(args, {"8s": (AUDIO["8s"], 0.0), "60s": (AUDIO["60s"], 0.0)})
        return
    if args.compare_long:
        compare_audio(args, {"10s": (AUDIO["60s"], 10.0), "10min": (AUDIO["60s"], 600.0)})
        return
    r = run_once(args)
    if args.json:
        print(json.dumps(r))
        return
    print(json.dumps(r))
    mem = f"peak RSS {r['peak_rss_gb']:.2f} GB" + (
        f", peak CUDA {r['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in r else ""
    )
    mfu = f", MFU {r['mfu'] * 100:.1f} %" if "mfu" in r else ""
    print(
        f"{r['preset']} {r['size']}px {r['steps']} steps cfg {r['cfg']} on {r['device']} "
        f"({r['dtype']}): {r['frames']} frames of {r['audio_s']} s audio in {r['seconds']:.1f} s "
        f"= {r['s_per_frame']:.3f} s/frame, {r['frames_per_s']:.1f} frames/s; {mem}{mfu}"
    )


if __name__ == "__main__":
    main()
