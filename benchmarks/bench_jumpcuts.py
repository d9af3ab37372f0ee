"""Jump cuts on real footage: spans cut out of the continuous shared speaker videos, before/after.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_jumpcuts.py [--stride 7] [--reencode 3]

For each continuous shared video (one shot, no cut) the label pipeline's own per-frame features
are computed once at 30 FPS, as `emokit label` computes them (decode, face track, the clip's crop,
face-mesh pose, the crop's 32×32 look). Removing frames a..a+L-1 from a video and labelling it
gives the same per-frame features spliced at a, because each feature depends only on its frame
(the crop box, a clip-level box, is kept at the whole video's; the real re-encodes below check
that this does not matter). Sweep: L = 0.3–3 s, a every ``--stride`` frames. The stride must not
share a factor with a source cadence (a 25 fps source held to 30 FPS repeats every 6 frames;
converted sources have periods of 3-5), or every cut lands on the same phase of it: at stride 6
the cuts of speaker_a all fell on its doubled step and recall read 83.7 % where 7 reads ~78 %
(BENCHMARKS.md). A cut is found when
a detected cut lies within 2 frames of the join; any other cut is a false split. The uncut videos
are the negatives. ``--reencode N`` really cuts N videos with PyAV at their own rate and runs
the whole feature pipeline on the result. Prints the fixed-threshold detector of emokit 0.1
(before: box 0.25 face sizes / rotation 20°), the per-region look on 8×8 cells without the
cadence step (regions) and with it (cadence), both at their threshold 0.75, and today's detector
(after: the lower of the 8×8 and 16×16 cells' scores, at JUMP_THRESHOLD), from the same features.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import CONTINUOUS_TALKING as CONTINUOUS  # noqa: E402
from media import KNOWN_SOURCE_CUTS  # noqa: E402
from media import SHARED as MEDIA_ROOT  # noqa: E402

from emokit.config import LabelConfig
from emokit.data.decode import frame_times
from emokit.data.jumpcuts import GRIDS, JUMP_THRESHOLD, box_steps, crop_look, find_jump_cuts, jump_scores
from emokit.data.label_video import _decode_and_detect, _make_part
from emokit.data.pose import relative_rotation_deg
from emokit.data.probe import probe
from emokit.data.track import track_main_face

SHARED = MEDIA_ROOT / "videos"
LENGTHS = (9, 15, 30, 45, 60, 90)  # frames at 30 FPS: 0.3 .. 3 s
TOLERANCE = 2


def legacy_find_jump_cuts(boxes, rotations, box_frac=0.25, rotation_deg=20.0) -> list[int]:
    """The detector before this change (emokit 0.1 jumpcuts.py), kept here as the baseline."""

    def sudden(steps, threshold):
        f = len(steps)
        out = np.zeros(f, dtype=bool)
        for t in np.flatnonzero(steps > threshold):
            lo, hi = max(1, t - 5), min(f, t + 6)
            around = np.delete(steps[lo:hi], t - lo)
            around = around[np.isfinite(around)]
            out[t] = steps[t] > 4.0 * (np.median(around) if len(around) else 0.0)
        return out

    jump = sudden(box_steps(boxes), box_frac)
    r = np.asarray(rotations, dtype=np.float64)
    steps = np.zeros(len(r))
    ok = np.isfinite(r).all(axis=1)
    pair = ok[1:] & ok[:-1]
    steps[1:] = np.where(pair, relative_rotation_deg(np.where(ok[:, None], r, 0.0)), 0.0)
    return np.flatnonzero(jump | sudden(steps, rotation_deg)).tolist()


def features(path: Path, cfg: LabelConfig) -> dict[str, np.ndarray]:
    """Boxes, poses and looks of every 30 FPS frame of ``path``, as label computes them."""
    info = probe(path)
    times = frame_times(path, info.video_stream)
    start = float(times[0])
    n = int((float(times[-1]) + 1 / info.fps - start) * cfg.fps)
    window = dict(
        source_path=str(path), start_s=start, end_s=start + n / cfg.fps, video_stream=info.video_stream
    )
    decoded = _decode_and_detect(window, cfg, None, 1)
    if isinstance(decoded, str):
        raise RuntimeError(f"{path.name}: {decoded}")
    frames = decoded.frames
    track = track_main_face(decoded.detections, cfg.fps, cfg.max_gap_s, frames.size, cfg.min_face_frac)
    t = time.perf_counter()
    part = _make_part(frames, track.boxes, 0, len(frames), cfg, None, 1)
    return dict(boxes=track.boxes, rot=part.poses[:, :3], looks=part.looks, part_s=time.perf_counter() - t)


# (cadence step, grids, threshold) of each look detector, in the order the steps were added; 0.75
# was the threshold shipped with the 8×8 cells alone (0.05 over their highest negative)
VARIANTS = {
    "regions": (False, (8,), 0.75),
    "cadence": (True, (8,), 0.75),
    "after": (True, GRIDS, JUMP_THRESHOLD),
}


def detectors():
    out = {"before": lambda f: legacy_find_jump_cuts(f["boxes"], f["rot"])}
    for name, (cadence, grids, threshold) in VARIANTS.items():
        out[name] = lambda f, c=cadence, g=grids, t=threshold: find_jump_cuts(f["boxes"], f["looks"], t, c, g)
    return out


def splice(f: dict, a: int, n: int) -> dict:
    return {k: np.concatenate([v[:a], v[a + n :]]) for k, v in f.items() if isinstance(v, np.ndarray)}


def cut_video(src: Path, dst: Path, t0: float, t1: float) -> float:
    """``src`` without its frames shown in [t0, t1) s, re-encoded (x264) at its own frame rate;
    returns the time of the first frame after the join in the new video."""
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        rate = Fraction(v.average_rate).limit_denominator(1000)
        tb = Fraction(v.time_base)
        kept = []
        origin = None
        for fr in c.decode(v):
            t = float(fr.pts * tb)
            origin = t if origin is None else origin
            if not (t0 <= t - origin < t1):
                kept.append((t - origin >= t1, fr.to_ndarray(format="rgb24")))
    join = next(i for i, (after, _) in enumerate(kept) if after)
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "veryfast"})
        s.height, s.width = kept[0][1].shape[:2]
        s.pix_fmt = "yuv420p"
        for i, (_, img) in enumerate(kept):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            fr.time_base = 1 / rate
            out.mux(s.encode(fr))
        out.mux(s.encode(None))
    return float(join / rate)


def cost_ms(cfg: LabelConfig) -> tuple[float, float]:
    """Median ms of crop_look on one crop, and of jump_scores per frame of a 10 s window."""
    crop = np.random.default_rng(0).integers(0, 255, (cfg.size, cfg.size, 3), dtype=np.uint8)
    look = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(200):
            crop_look(crop)
        look.append((time.perf_counter() - t) / 200 * 1e3)
    looks = np.random.default_rng(1).integers(0, 255, (300, 32, 32), dtype=np.uint8)
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (300, 1)) + np.arange(300)[:, None]
    score = []
    for _ in range(7):
        t = time.perf_counter()
        jump_scores(boxes, looks)
        score.append((time.perf_counter() - t) / 300 * 1e3)
    return float(np.median(look)), float(np.median(score))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stride", type=int, default=7, help="frames between cut positions (see above)")
    ap.add_argument("--reencode", type=int, default=3, help="videos to really cut and re-encode")
    args = ap.parse_args()
    cfg = LabelConfig()
    look_ms, score_ms = cost_ms(cfg)
    print(f"cost: crop_look {look_ms:.3f} ms per {cfg.size}² crop, jump_scores {score_ms:.4f} ms per frame")
    feats = {}
    for name in CONTINUOUS:
        t = time.perf_counter()
        feats[name] = features(SHARED / name, cfg)
        print(
            f"features {name}: {len(feats[name]['boxes'])} frames, {time.perf_counter() - t:.1f} s",
            flush=True,
        )
    dets = detectors()
    print("\nnegatives (uncut continuous videos): cuts found; known source edits reported apart")
    false_neg = {d: 0 for d in dets}
    for name, f in feats.items():
        found = {d: fn(f) for d, fn in dets.items()}
        known = KNOWN_SOURCE_CUTS.get(name, [])
        for d, c in found.items():
            false_neg[d] += any(all(abs(x - k) > TOLERANCE for k in known) for x in c)
        print(
            f"  {name:38s} "
            + "  ".join(f"{d}: {c}" for d, c in found.items())
            + (f"  (known source edit at {known})" if known else "")
        )
        # the margin: the highest score of any frame but the known edits (threshold JUMP_THRESHOLD)
        near = [t for k in known for t in range(k - TOLERANCE, k + TOLERANCE + 1)]
        scores = {d: jump_scores(f["boxes"], f["looks"], c, g) for d, (c, g, _) in VARIANTS.items()}
        highest = {d: np.delete(s, near).max() for d, s in scores.items()}
        print("    highest score: " + ", ".join(f"{d} {h:.3f}" for d, h in highest.items()))
    print(f"\nsweep: spans of {[round(n / 30, 2) for n in LENGTHS]} s removed every {args.stride} frames")
    stats = {d: {n: [0, 0, 0] for n in LENGTHS} for d in dets}  # found, false split, total
    per_video = {d: {} for d in dets}
    for name, f in feats.items():
        total = len(f["boxes"])
        for n in LENGTHS:
            for a in range(15, total - n - 15, args.stride):
                g = splice(f, a, n)
                # the known source edits that this splice keeps, where they land in it
                known = [k if k < a else k - n for k in KNOWN_SOURCE_CUTS.get(name, []) if not a <= k < a + n]
                for d, fn in dets.items():
                    cuts = fn(g)
                    hit = any(abs(c - a) <= TOLERANCE for c in cuts)
                    extra = any(
                        abs(c - a) > TOLERANCE and all(abs(c - k) > TOLERANCE for k in known) for c in cuts
                    )
                    st = stats[d][n]
                    st[0] += hit
                    st[1] += extra
                    st[2] += 1
                    pv = per_video[d].setdefault(name, [0, 0])
                    pv[0] += hit
                    pv[1] += 1
    for d in dets:
        found = sum(s[0] for s in stats[d].values())
        extra = sum(s[1] for s in stats[d].values())
        cuts = sum(s[2] for s in stats[d].values())
        by_len = ", ".join(f"{n / 30:.1f}s {s[0] / s[2]:.0%}" for n, s in stats[d].items())
        print(
            f"{d:7s}: recall within {TOLERANCE} frames {found / cuts:.1%} of {cuts} cuts ({by_len}); "
            f"cut videos with a false split {extra / cuts:.1%}; "
            f"uncut videos falsely split {false_neg[d]}/{len(feats)} (known source edits apart)"
        )
        print(
            "        per video: "
            + ", ".join(
                f"{k.split('_')[0]}_{k.split('_')[1]} {v[0] / v[1]:.0%}" for k, v in per_video[d].items()
            )
        )
    part_ms = np.median([f["part_s"] / len(f["boxes"]) for f in feats.values()]) * 1e3
    print(f"\n(label's crop loop with pose, hands, encode and looks: median {part_ms:.1f} ms/frame)")
    if args.reencode:
        print("\nreal re-encodes (span removed with PyAV, whole pipeline on the result):")
        work = Path(tempfile.mkdtemp(prefix="emokit-bench-jump-"))
        for name, (t0, t1) in list(
            {
                "speaker_c_25fps_512.mp4": (3.0, 4.2),
                "speaker_d_25fps_410x412.mp4": (2.5, 3.3),
                "head_turn_25fps_224.mp4": (5.0, 7.0),
                "speaker_b_30fps_1080x1920.mp4": (12.0, 12.5),
            }.items()
        )[: args.reencode]:
            dst = work / f"cut_{name}"
            join_s = cut_video(SHARED / name, dst, t0, t1)
            f = features(dst, cfg)
            join = int(np.ceil(join_s * cfg.fps - 1e-6))
            found = {d: fn(f) for d, fn in dets.items()}
            print(
                f"  {name} without {t0}-{t1} s: join at frame {join}; "
                + "  ".join(
                    f"{d}: {c} ({'found' if any(abs(x - join) <= TOLERANCE for x in c) else 'missed'})"
                    for d, c in found.items()
                )
            )


if __name__ == "__main__":
    sys.exit(main())
