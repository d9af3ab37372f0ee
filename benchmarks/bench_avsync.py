"""How well the weight-free A/V sync label (emokit.data.avsync) works on real talking heads.

    .venv/bin/python benchmarks/bench_avsync.py [--window 6] [--size 256]

The shared talking clips are cut into windows of ``--window`` seconds (as `emokit label`'s clips
are 3-12 s), each cropped like label does (a fixed square of 1.5 face sides around the first face,
resized to ``--size``) and its mouth opening measured per 30 FPS frame. Then, in one run:
  moved      the window's own audio moved by 0, ±3, ±6, ±9 frames (0, ±100, ±200, ±300 ms);
  other      the window's picture with the audio of every other clip's window and of the shared
             speech recordings (another speaker: must get no_lipsync);
  still      the window's first crop held for the whole window with its own speech (no_lipsync).
Printed: the fraction of moved trials whose lag is within 2 frames of the truth (all of them, and
those where an offset is stored), the lag change against the unmoved window (what
`emokit evaluate` reports), the confidence distribution and the no_lipsync rate of each group.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

from emokit.data.audio import load_audio  # noqa: E402
from emokit.data.avsync import mouth_audio_sync  # noqa: E402
from emokit.data.crop import square_crop_box  # noqa: E402
from emokit.data.decode import frame_times, read_frames  # noqa: E402
from emokit.data.faces import FaceDetector  # noqa: E402
from emokit.data.mouth import mouth_opening_series  # noqa: E402
from emokit.data.syncnet import square_crops  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = {  # file: video stream (speaker_d's video is stream 1)
    "speaker_a_25fps_1080x1920.mp4": None,
    "speaker_b_30fps_1080x1920.mp4": None,
    "speaker_c_25fps_512.mp4": None,
    "speaker_d_25fps_410x412.mp4": 1,
    "head_turn_25fps_224.mp4": None,
    "speaker_vfr_700.mp4": None,
}
OTHER_AUDIO = ["speech_en_8s_16k_stereo.wav", "speech_en_11s_44k_24bit.flac", "speech_60s_16k_mono.wav",
               "speech_15s_44k_stereo.wav"]  # fmt: skip
SHIFTS = [0, 3, -3, 6, -6, 9, -9]
FPS, SR = 30, 16000


def shift_audio(a: np.ndarray, frames: int) -> np.ndarray:
    """Audio ``frames`` late (negative: early), same length, silence where it runs out."""
    s = round(frames * SR / FPS)
    if s >= 0:
        return np.concatenate([np.zeros(s, a.dtype), a[: len(a) - s]])
    return np.concatenate([a[-s:], np.zeros(-s, a.dtype)])


def windows(window_s: float, size: int):
    """(name, mouth series, still-face mouth series, audio) per window of every clip."""
    for name, stream in CLIPS.items():
        path = DATA / "videos" / name
        t = frame_times(path, stream)
        start, end = float(t[0]), float(t[-1])
        for k in range(int((end - start) // window_s)):
            a, b = start + k * window_s, start + (k + 1) * window_s
            frames = list(read_frames(path, a, b, FPS, stream))
            with FaceDetector() as det:
                box = det(frames[0])[0]
            x0, y0, x1, _ = square_crop_box(box.xyxy(), 1.5, (frames[0].shape[1], frames[0].shape[0]))
            crops = list(square_crops(np.stack(frames), np.tile([x0, y0, x1 - x0], (len(frames), 1)), size))
            mouth = mouth_opening_series(crops)
            still = mouth_opening_series([crops[0]] * len(crops))
            yield f"{name[:9]}@{a:.0f}s", mouth, still, load_audio(path, a, b, SR)


def _dist(x) -> str:
    x = np.array([v for v in x if v is not None], dtype=float)
    if not len(x):
        return "n=0"
    p = np.percentile(x, [10, 50, 90])
    return f"n={len(x)} p10 {p[0]:.2f} median {p[1]:.2f} p90 {p[2]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    wins = list(windows(args.window, args.size))
    others = [load_audio(DATA / "audio" / f, 0.0, args.window, SR) for f in OTHER_AUDIO]
    moved, rel, other, still = [], [], [], []
    for i, (name, mouth, held, audio) in enumerate(wins):
        base = mouth_audio_sync(mouth, audio, FPS, SR)
        for s in SHIFTS:
            r = mouth_audio_sync(mouth, shift_audio(audio, s), FPS, SR)
            moved.append((s, r))
            if base.lag_frames is not None and r.lag_frames is not None:
                rel.append(r.lag_frames - base.lag_frames - s)
        conf = f"{base.confidence:.2f}"
        print(f"{name:<16} unmoved lag {base.lag_frames:+d} conf {conf} flags {list(base.flags)}")
        foreign = [w[3] for j, w in enumerate(wins) if j != i and w[0][:9] != name[:9]] + others
        other += [mouth_audio_sync(mouth, a[: len(audio)], FPS, SR) for a in foreign]
        still.append(mouth_audio_sync(held, audio, FPS, SR))
    lag_ok = [abs(r.lag_frames - s) <= 2 for s, r in moved if r.lag_frames is not None]
    stored = [(s, r) for s, r in moved if r.offset_frames is not None]
    print(f"\n{len(wins)} windows of {args.window:g} s, crops {args.size}²")
    print(f"moved audio ({len(moved)} trials, shifts {SHIFTS} frames):")
    print(f"  lag within 2 frames of the truth: {np.mean(lag_ok):.2f}")
    print(f"  lag change vs the unmoved window within 1 frame of the shift: {np.mean(np.abs(rel) <= 1):.2f}")
    ok_stored = np.mean([abs(r.offset_frames - s) <= 2 for s, r in stored]) if stored else float("nan")
    print(f"  offset stored in {len(stored) / len(moved):.2f} of trials")
    print(f"  within 2 frames of the truth where stored: {ok_stored:.2f}")
    print(f"  confidence: {_dist([r.confidence for _, r in moved])}")
    print(f"  no_lipsync (false): {np.mean(['no_lipsync' in r.flags for _, r in moved]):.2f}")
    for label, group in (("other speaker's audio", other), ("still face with speech", still)):
        flagged = np.mean(["no_lipsync" in r.flags for r in group])
        print(f"{label} ({len(group)} trials): no_lipsync {flagged:.2f}")
        print(f"  confidence: {_dist([r.confidence for r in group])}")
        print(f"  offset stored (false): {np.mean([r.offset_frames is not None for r in group]):.2f}")


if __name__ == "__main__":
    main()
