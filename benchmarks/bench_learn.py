"""Does the whole chain learn a talking face? Labels → three training stages → generation, on CPU.

    .venv/bin/python benchmarks/bench_learn.py                      # full figure (~30 min budget)
    .venv/bin/python benchmarks/bench_learn.py --budget-min 8       # a quick look

One real talking-head clip (speaker_c: 8 s, frontal, clean speech) is ingested and labelled into a
temp dataset; the tiny-face preset (lossless pixel latent, pipelines/learn.toml) is trained on it
through stages 1, 2 and 3 under a wall-clock budget; then, from the clip's first frame, it
generates the clip's first ``--seconds`` with the clip's own audio. In the same run it compares:

- trained:     the trained model, the clip's own audio;
- untrained:   the same model at its random initialisation (a);
- still:       the first frame repeated (b): what copying the portrait scores;
- other audio: the trained model driven by another speaker's speech (c).

The trained and (c) videos are rendered once per ``--seeds`` noise seed (default three) and their
rows are the means: 120 frames of one seed give a mouth r that moves by ±0.1 from seed to seed.

Metrics against the clip's real frames at the training resolution: PSNR, SSIM (emokit.evaluate.
metrics), and the Pearson correlation of the per-frame mouth opening (emokit.data.mouth: face-mesh
inner-lip gap / eye-corner distance; frames are upscaled x4 for the face mesh, and the table's
first line shows how much mouth signal survives that resolution on the real frames). Per-clip PSNR
of the trained video shows whether quality degrades clip by clip (errors fed back through motion
frames). The line after it says whether the model uses its audio at all: the denoising error on
64 training draws with the audio moved by 6 frames and with no audio, over the error with the
clip's own (benchmarks/bench_audio_gain.py). The audio tokens are weight-free log-mel features
(emokit.data.logmel, ``--audio-model logmel``, as pipelines/learn.toml labels): no wav2vec
weights can be downloaded here, and a random wav2vec's tokens carry no mouth signal
(``--audio-model random-wav2vec`` shows it).

Targets (issue 13): trained mouth correlation >= 0.5 and >= (c) + 0.3; PSNR >= (b) + 3 dB and
>= (a) + 10 dB; no degradation from the first clip to the last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from emokit.config import LabelConfig, load_recipe
from emokit.data.faces import FaceBox
from emokit.data.ingest import ingest
from emokit.data.label import label
from emokit.data.mouth import mouth_correlation, mouth_opening_series
from emokit.data.logmel import LOGMEL
from emokit.data.wav2vec import open_audio_encoder, save_tiny_wav2vec
from emokit.evaluate.metrics import psnr, ssim
from emokit.generate.generator import FPS, MUX_SR, Generator, Speech, load_run
from emokit.generate.portrait import Portrait
from emokit.models import EMOModel
from emokit.train.dataset import decode_frames, face_mask, index_clips
from emokit.train.loop import train
from emokit.train.dataset import _RowCache  # noqa: I001 - the shard reader training uses

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audio_gain import audio_gain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VIDEO = SHARED / "videos" / "speaker_c_25fps_512.mp4"
OTHER_AUDIO = SHARED / "audio" / "speech_en_8s_16k_stereo.wav"
RECIPE = ROOT / "pipelines" / "learn.toml"
MOUTH_UPSCALE = 4


def prepare(work: Path, video: Path, label_size: int, audio_model: str = LOGMEL) -> tuple[Path, str]:
    """Ingest + label ``video`` into ``work/dataset`` (resumable) with ``audio_model``: logmel, or
    ``random-wav2vec`` for a tiny random wav2vec (the features the first runs used)."""
    if audio_model == "random-wav2vec":
        w2v = work / "w2v"
        if not w2v.exists():
            save_tiny_wav2vec(w2v)
        audio_model = str(w2v)
    dataset = work / "dataset"
    ingest([video], dataset, workers=1, progress=False)
    cfg = dataclasses.replace(LabelConfig(), audio_model=audio_model, size=label_size)
    label(dataset, cfg, workers=1, progress=False, audio_device="cpu")
    return dataset, audio_model


def train_stages(
    dataset: Path, run: Path, budget_s: float, split: list[float], recipe_path: Path
) -> list[dict]:
    """Stages 1-3 of the recipe, stage k for ``split[k] * budget_s`` seconds (resumable)."""
    cfg = dataclasses.replace(load_recipe(recipe_path).train, max_steps=1_000_000)
    out = []
    for stage, share in zip((1, 2, 3), split):
        if share <= 0:
            continue
        r = train(
            dataset, run, stage, cfg, workers=1, progress=False, log=print, time_limit_s=share * budget_s
        )
        out.append(
            {"stage": stage, "steps": r.step, "seconds": round(r.seconds, 1), "last_loss": r.losses[-1:]}
        )
        print(f"stage {stage}: {r.step} steps in {r.seconds:.0f} s", flush=True)
    return out


def clip_media(dataset: Path, work: Path, size: int) -> tuple[np.ndarray, Portrait, Path]:
    """The labelled clip's real frames at ``size`` (as training decodes them), its first frame as
    the portrait (face mask = the clip's face box, as in training) and its mp4 (for the audio)."""
    clips, _ = index_clips(dataset, 2, 12, 4)
    clip = clips[0]
    video, _ = _RowCache().get(clip)
    mp4 = work / "clip.mp4"
    mp4.write_bytes(video)
    frames = decode_frames(video, list(range(clip.num_frames)), clip.fps, size)
    mask = face_mask(clip.face_mask_box, clip.size, size).numpy()
    s = float(size)
    portrait = Portrait(
        image=frames[0],
        face_mask=mask,
        face_box=FaceBox(*(v * s / clip.size for v in clip.face_mask_box), 1.0),
        crop_box=(0.0, 0.0, s, s),
        source_size=(size, size),
        faces=1,
        warnings=(),
    )
    return frames, portrait, mp4


def trimmed(path: Path, frames: int) -> Speech:
    """The first ``frames`` video frames' worth of a speech track (zero-padded if shorter)."""
    full = Speech.load(path)
    n16, n48 = frames * 16000 // FPS, frames * MUX_SR // FPS
    pad = lambda x, n: np.pad(x[:n], (0, max(0, n - len(x))))  # noqa: E731
    return Speech(pad(full.wav16k, n16), pad(full.mux, n48), frames / FPS, frames)


def render(
    gen: Generator, portrait: Portrait, speech: Speech, steps: int, cfg: float, guidance: str, seed: int
) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    run = gen.render(portrait, speech, steps=steps, cfg=cfg, seed=seed, speed=None, guidance=guidance)
    frames = np.stack(list(run))
    return frames, time.perf_counter() - t


def mouth(frames: np.ndarray) -> np.ndarray:
    """Mouth opening per frame on frames upscaled for the face mesh."""
    big = [
        cv2.resize(f, None, fx=MOUTH_UPSCALE, fy=MOUTH_UPSCALE, interpolation=cv2.INTER_CUBIC) for f in frames
    ]
    return mouth_opening_series(big)


def grid(rows: dict[str, np.ndarray], path: Path, every: int = 12, count: int = 10) -> None:
    """A PNG of every ``every``-th frame (columns) of each video (rows), for a human look."""
    lines = []
    for frames in rows.values():
        picks = [frames[min(i * every, len(frames) - 1)] for i in range(count)]
        lines.append(np.concatenate(picks, axis=1))
    img = np.concatenate(lines, axis=0)
    img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=24.0, help="training wall-clock budget, all stages")
    ap.add_argument("--split", default="0.35,0.55,0.10", help="budget share of stages 1,2,3")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the generated videos")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the recipe's)")
    ap.add_argument("--scheduler", default=None, help="ddim, ddpm, dpmpp, ... (default: the recipe's)")
    ap.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the recipe's)")
    ap.add_argument("--guidance", default=None, help="both or audio: what CFG drops (default: the recipe's)")
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--other-audio", type=Path, default=OTHER_AUDIO)
    ap.add_argument("--label-size", type=int, default=128)
    ap.add_argument(
        "--seeds",
        default="0,1,2",
        help="generation noise seeds: trained and (c) are rendered with "
        "each and the checks use their means (one 4 s video gives a noisy mouth r)",
    )
    ap.add_argument("--audio-model", default=LOGMEL, help="logmel (default) or random-wav2vec")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a busy 2-core box)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/emokit-bench-learn"))
    ap.add_argument("--run", type=Path, default=None, help="evaluate this trained run (skip training)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = load_recipe(args.recipe)
    steps = args.steps or recipe.generate.steps
    scale = args.cfg or recipe.generate.cfg
    drops = args.guidance or recipe.generate.guidance
    sampler = args.scheduler or recipe.generate.scheduler
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    dataset, w2v = prepare(args.work, args.video, args.label_size, args.audio_model)
    print(f"dataset ready in {time.perf_counter() - t0:.0f} s: {dataset}", flush=True)
    run = args.run or args.work / "run"
    stages = []
    if args.run is None:
        split = [float(x) for x in args.split.split(",")]
        stages = train_stages(dataset, run, args.budget_min * 60, split, args.recipe)
    train_s = time.perf_counter() - t0

    model, scheduler = load_run(run)
    alphas, kind = scheduler.alphas_cumprod, str(scheduler.config.prediction_type)
    size = model.config.sample_size * model.config.vae_factor
    real, portrait, clip_mp4 = clip_media(dataset, args.work, size)
    n = min(len(real), round(args.seconds * FPS))
    real = real[:n]
    encoder = open_audio_encoder(w2v, device="cpu")
    common = dict(
        frames=recipe.generate.frames,
        motion_frames=recipe.generate.motion_frames,
        progress=False,
        prediction_type=kind,
        scheduler=sampler,
    )
    trained = Generator.from_parts(model, alphas, encoder, "cpu", **common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        fresh = EMOModel(model.config)
    untrained = Generator.from_parts(fresh, alphas, encoder, "cpu", **common)

    own, other = trimmed(clip_mp4, n), trimmed(args.other_audio, n)
    seeds = [int(x) for x in args.seeds.split(",")]
    runs: dict[str, list[np.ndarray]] = {"trained": [], "other audio (c)": []}
    seconds: dict[str, float] = {}
    for seed in seeds:
        for name, speech in (("trained", own), ("other audio (c)", other)):
            frames, s = render(trained, portrait, speech, steps, scale, drops, seed)
            runs[name].append(frames)
            seconds[name] = seconds.get(name, 0.0) + s / len(seeds)
    videos = {"trained": runs["trained"][0]}
    videos["untrained (a)"], seconds["untrained (a)"] = render(
        untrained, portrait, own, steps, scale, drops, seeds[0]
    )
    videos["still (b)"] = np.repeat(real[:1], n, axis=0)
    videos["other audio (c)"] = runs["other audio (c)"][0]
    grid({"real": real, **videos}, args.work / "frames.png")

    real_mouth = mouth(real)
    full_res = decode_frames((args.work / "clip.mp4").read_bytes(), list(range(n)), FPS, args.label_size)
    signal = mouth_correlation(mouth(real), mouth_opening_series(list(full_res)))

    def score(frames: np.ndarray) -> dict:
        opening = mouth(frames)
        both = np.isfinite(opening) & np.isfinite(real_mouth)
        return {
            "psnr_db": psnr(frames, real),
            "ssim": ssim(frames, real),
            "mouth_corr": mouth_correlation(opening, real_mouth),
            # how far the mouth moves vs the real one (a correct but timid mouth reads < 1)
            "mouth_std_ratio": float(opening[both].std() / real_mouth[both].std()) if both.any() else None,
        }

    per_seed = {name: [score(f) for f in fs] for name, fs in runs.items()}
    rows = {name: score(videos[name]) for name in ("untrained (a)", "still (b)")}
    for name, scores in per_seed.items():  # the mean over seeds (a seed without a face counts 0)
        rows[name] = {k: float(np.mean([r[k] or 0.0 for r in scores])) for k in scores[0]}
    rows = {k: rows[k] for k in ("trained", "untrained (a)", "still (b)", "other audio (c)")}
    clip_len = recipe.generate.frames
    per_clip = [
        psnr(videos["trained"][i : i + clip_len], real[i : i + clip_len]) for i in range(0, n, clip_len)
    ]

    t, a, b, c = (rows[k] for k in ("trained", "untrained (a)", "still (b)", "other audio (c)"))
    checks = {
        "mouth_corr >= 0.5": (t["mouth_corr"] or 0) >= 0.5,
        "mouth_corr >= (c) + 0.3": (t["mouth_corr"] or 0) >= (c["mouth_corr"] or 0) + 0.3,
        "PSNR >= (b) + 3 dB": t["psnr_db"] >= b["psnr_db"] + 3,
        "PSNR >= (a) + 10 dB": t["psnr_db"] >= a["psnr_db"] + 10,
        "last clip PSNR >= first - 1 dB": per_clip[-1] >= per_clip[0] - 1,
    }
    print(f"\n{args.video.name}: {n} frames at {size} px, {sampler} {steps} steps, cfg {scale} ({drops})")
    for s in stages:
        print(f"  stage {s['stage']}: {s['steps']} steps, {s['seconds']:.0f} s")
    print(
        f"mouth signal at {size} px (x{MOUTH_UPSCALE} for the face mesh) vs {args.label_size} px, "
        f"real frames: r = {signal}"
    )
    print(f"seeds {seeds}: trained and (c) rows are means over them")
    print(f"{'video':<18}{'PSNR dB':>9}{'SSIM':>8}{'mouth r':>9}{'gen s':>8}")
    for name, r in rows.items():
        mc = "n/a" if r["mouth_corr"] is None else f"{r['mouth_corr']:.2f}"
        print(f"{name:<18}{r['psnr_db']:>9.2f}{r['ssim']:>8.3f}{mc:>9}{seconds.get(name, 0):>8.0f}")
    for name, scores in per_seed.items():
        print(
            f"  {name} per seed: mouth r "
            + " / ".join(f"{r['mouth_corr'] or 0:.2f}" for r in scores)
            + ", PSNR "
            + " / ".join(f"{r['psnr_db']:.2f}" for r in scores)
            + ", mouth std / real "
            + " / ".join(f"{r['mouth_std_ratio'] or 0:.2f}" for r in scores)
        )
    print("per-clip PSNR (trained, first seed): " + " ".join(f"{p:.1f}" for p in per_clip))
    gain = audio_gain(run, dataset)  # does the model use the audio at all (bench_audio_gain.py)
    print(
        "denoising error vs own audio (64 training draws; whole / mouth region): "
        + ", ".join(
            f"{k} {v['gain_pct']:+.1f} % / {v['mouth_gain_pct']:+.1f} %"
            for k, v in gain.items()
            if k != "own"
        )
    )
    for name, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {name}")
    print(
        f"frames: {args.work / 'frames.png'}; total {time.perf_counter() - t0:.0f} s "
        f"(data + training {train_s:.0f} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "stages": stages,
                    "rows": rows,
                    "per_seed": per_seed,
                    "per_clip_psnr": per_clip,
                    "checks": checks,
                    "signal": signal,
                    "audio_gain": gain,
                    "sampler": {"scheduler": sampler, "steps": steps, "cfg": scale, "guidance": drops},
                },
                indent=2,
                default=lambda x: None if isinstance(x, float) and math.isnan(x) else x,
            )
        )


if __name__ == "__main__":
    main()
