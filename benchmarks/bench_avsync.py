"""How well the weight-free A/V sync label (emokit.data.avsync) works on real talking heads.

    .venv/bin/python benchmarks/bench_avsync.py [--window 6] [--size 256]

The shared talking clips are cut into windows of ``--window`` seconds (as `emokit label`'s clips
are 3-12 s), each cropped like label does (a fixed square of 1.5 face sides around the first face,
resized to ``--size``); the face mesh runs once per frame and feeds both methods. Then, in one run,
BEFORE (the method up to this change: inner-lip velocity vs band-envelope derivative, kept below as
``legacy_sync``) and AFTER (emokit.data.avsync now):
  moved      the window's own audio moved by 0, ±3, ±6, ±9 frames (0, ±100, ±200, ±300 ms);
  other      the window's picture with the audio of every other speaker's window and of the shared
             speech recordings (another speaker: must get no_lipsync);
  still      the window's first crop held for the whole window with its own speech (no_lipsync).
Printed: the lag within 2 frames of the truth, offsets stored and how many are right, the
confidence distribution and the no_lipsync rate of each group, and a leave-one-speaker-out check
of the no_lipsync threshold (for each speaker, the threshold is the 92nd percentile of the
other-speaker confidences of the trials not involving that speaker, applied to that speaker).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
from scipy.signal import butter, sosfiltfilt  # noqa: E402

from emokit.data.audio import load_audio  # noqa: E402
from emokit.data.avsync import AVSync, lag_curve, mouth_audio_sync  # noqa: E402
from emokit.data.crop import square_crop_box  # noqa: E402
from emokit.data.decode import frame_times, read_frames  # noqa: E402
from emokit.data.faces import FaceDetector  # noqa: E402
from emokit.data.mouth import MouthTrack, mouth_opening  # noqa: E402
from emokit.data.pose import HeadPoseEstimator  # noqa: E402
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


def legacy_sync(mouth: np.ndarray, audio: np.ndarray, fps: float = FPS, sr: int = SR) -> AVSync:
    """BEFORE: the method up to schema 5 (inner-gap velocity vs the derivative of the 300-3000 Hz
    RMS envelope, ±15 lags, lead 2, offset at confidence >= 6.0, no_lipsync below 3.0)."""
    found = np.isfinite(mouth)
    if found.mean() < 0.5 or len(mouth) < 60:
        return AVSync(None, None, "legacy")
    t = np.arange(len(mouth))
    mouth = np.interp(t, t[found], mouth[found])
    x = (
        sosfiltfilt(butter(4, (300.0, 3000.0), btype="band", fs=sr, output="sos"), audio.astype(np.float64))
        ** 2
    )
    csum, hop = np.concatenate([[0.0], np.cumsum(x)]), sr / fps
    mid = (t + 0.5) * hop
    lo, hi = (np.clip((mid + d).astype(np.int64), 0, len(x)) for d in (-hop, hop))
    env = np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))
    if np.percentile(env, 90) < 1e-3:
        return AVSync(None, None, "legacy")
    if mouth.std() < 0.005:
        return AVSync(None, 0.0, "legacy", ("no_lipsync",))
    r = lag_curve(np.gradient(mouth), np.gradient(env))
    n = len(r)
    near, far = r[np.arange(-15, 16) % n], r[16 : n - 15]
    conf = float((near.max() - far.mean()) / far.std())
    lag = int(np.argmax(near)) - 15 - 2
    flags = ("no_lipsync",) if conf < 3.0 else ()
    return AVSync(lag if conf >= 6.0 else None, conf, "legacy", flags, lag)


def shift_audio(a: np.ndarray, frames: int) -> np.ndarray:
    """Audio ``frames`` late (negative: early), same length, silence where it runs out."""
    s = round(frames * SR / FPS)
    if s >= 0:
        return np.concatenate([np.zeros(s, a.dtype), a[: len(a) - s]])
    return np.concatenate([a[-s:], np.zeros(-s, a.dtype)])


def windows(window_s: float, size: int):
    """(name, speaker, {method: mouth input}, {method: still-face input}, audio) per window."""
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
            track, still, opening = MouthTrack(), MouthTrack(), []
            with HeadPoseEstimator() as est:
                first = None
                for i, crop in enumerate(crops):
                    marks = est.mesh(crop)
                    first = marks if i == 0 else first
                    track.add(marks, crop)
                    still.add(first, crops[0])
                    opening.append(np.nan if marks is None else mouth_opening(marks))
            held = np.full(len(crops), opening[0])
            mouth = dict(before=np.array(opening), after=track.series())
            yield f"{name[:9]}@{a:.0f}s", name[:9], mouth, dict(before=held, after=still.series()), \
                load_audio(path, a, b, SR)  # fmt: skip


def _dist(x) -> str:
    x = np.array([v for v in x if v is not None], dtype=float)
    if not len(x):
        return "n=0"
    p = np.percentile(x, [10, 50, 90])
    return f"n={len(x)} p10 {p[0]:.2f} median {p[1]:.2f} p90 {p[2]:.2f}"


def loso(moved, other, q: float = 92) -> tuple[float, float]:
    """(false no_lipsync on moved own audio, no_lipsync on other audio), each speaker judged by a
    threshold chosen without it."""
    f_own, f_oth = [], []
    for spk in sorted({s for s, *_ in moved}):
        train = [r.confidence for p, a, r in other if spk not in (p, a)]
        thr = np.percentile(train, q)
        f_own += [r.confidence < thr for s, _, r in moved if s == spk]
        f_oth += [r.confidence < thr for p, _, r in other if p == spk]
    return float(np.mean(f_own)), float(np.mean(f_oth))


def report(method: str, wins, others, fn) -> None:
    moved, other, still = [], [], []  # (picture speaker, truth | audio speaker, AVSync)
    for name, spk, mouth, held, audio in wins:
        m = mouth[method]
        base = fn(m, audio, FPS, SR)
        lag, conf = base.lag_frames, base.confidence
        print(f"  {name:<16} unmoved lag {lag} conf {None if conf is None else round(conf, 2)} {base.flags}")
        moved += [(spk, s, fn(m, shift_audio(audio, s), FPS, SR)) for s in SHIFTS]
        foreign = [(w[1], w[4]) for w in wins if w[1] != spk] + [("rec", a) for a in others]
        other += [(spk, a_spk, fn(m, a[: len(audio)], FPS, SR)) for a_spk, a in foreign]
        still.append(fn(held[method], audio, FPS, SR))
    lag_ok = [abs(r.lag_frames - s) <= 2 for _, s, r in moved if r.lag_frames is not None]
    stored = [(s, r) for _, s, r in moved if r.offset_frames is not None]
    ok = np.mean([abs(r.offset_frames - s) <= 2 for s, r in stored]) if stored else float("nan")
    print(f"{method}: moved audio ({len(moved)} trials, shifts {SHIFTS} frames):")
    print(f"  lag within 2 frames of the truth: {np.mean(lag_ok):.2f}")
    print(f"  offset stored in {len(stored) / len(moved):.2f} of trials ({len(stored)}), "
          f"within 2 frames of the truth where stored: {ok:.2f}")  # fmt: skip
    print(f"  confidence: {_dist([r.confidence for *_, r in moved])}")
    unmoved = np.mean(["no_lipsync" in r.flags for _, s, r in moved if s == 0])
    false = np.mean(["no_lipsync" in r.flags for *_, r in moved])
    print(f"  no_lipsync (false): {false:.2f}, unmoved only {unmoved:.2f}")
    for label, group in (
        ("other speaker's audio", [r for *_, r in other]),
        ("still face with speech", still),
    ):
        flagged = np.mean(["no_lipsync" in r.flags for r in group])
        print(f"{method}: {label} ({len(group)} trials): no_lipsync {flagged:.2f}")
        print(f"  confidence: {_dist([r.confidence for r in group])}")
        print(f"  offset stored (false): {np.mean([r.offset_frames is not None for r in group]):.2f}")
    f_own, f_oth = loso(moved, other)
    print(f"{method}: leave-one-speaker-out threshold (q92 of others): false no_lipsync {f_own:.2f}, "
          f"other-speaker no_lipsync {f_oth:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    wins = list(windows(args.window, args.size))
    others = [load_audio(DATA / "audio" / f, 0.0, args.window, SR) for f in OTHER_AUDIO]
    print(f"{len(wins)} windows of {args.window:g} s, crops {args.size}²")
    for method, fn in (("before", legacy_sync), ("after", mouth_audio_sync)):
        report(method, wins, others, fn)


if __name__ == "__main__":
    main()
