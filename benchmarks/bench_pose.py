"""Head pose and velocity against known truth on real footage: the old estimator vs the new one.

    .venv/bin/python benchmarks/bench_pose.py [--seconds 8] [--work /tmp/emokit-bench-pose]

BEFORE = the estimator emokit used until schema 2 (MediaPipe face mesh in tracking mode, PnP from
the previous frame's solution, raw poses differenced); it lives on below as LegacyHeadPoseEstimator.
AFTER = emokit.data.pose today (static-image face mesh, fresh PnP, smooth_poses before
differencing). Both run on the same crops in one decode; truths come from known transforms of the
shared real videos, written to --work (never to the repo):
  rotation  the video turned in-plane about the crop centre by θ(t) = 10°·sin(2πt/3) (per source
            frame, re-encoded at the source rate): the rotation between the two pose series must
            be |θ(t)|, its frame-to-frame change |θ(t) − θ(t−1)|
  pause     the video with one frame held for 2 s: velocity inside the pause must be 0
  roll      the known-roll portrait of tests/test_pose.py (roll ±1.2°/source frame, 25 → 30 fps)
  videos    velocity on held frames of 25 fps sources (identical images: the noise floor) and the
            velocity distribution over every 30 FPS frame of the shared talking videos
Velocities are in degrees per 30 FPS frame. Per-frame costs are CPU time of the estimator call
(all MediaPipe threads), medians; wall times on this shared machine are noisier.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from media import CONTINUOUS_TALKING as TALKING  # noqa: E402
from media import SHARED  # noqa: E402

from emokit.data.crop import clip_crop_box, crop_square  # noqa: E402
from emokit.data.decode import _to_rgb, frame_times, read_frames, read_video_frames  # noqa: E402
from emokit.data.encode import Mp4Writer  # noqa: E402
from emokit.data.faces import FaceDetector  # noqa: E402
from emokit.data.pose import (  # noqa: E402
    MESH_INDICES,
    POSE_SMOOTH_SIGMA,
    HeadPoseEstimator,
    Pose,
    euler_to_matrix,
    fill_missing,
    resample_poses,
    rotation_velocity,
    smooth_poses,
    solve_pose,
)
from emokit.data.track import track_main_face  # noqa: E402

SIZE = 512
FPS = 30
SIGMA = POSE_SMOOTH_SIGMA  # --sigma
TRUTH = ["speaker_c_25fps_512.mp4", "speaker_d_25fps_410x412.mp4", "head_turn_25fps_224.mp4"]


class LegacyHeadPoseEstimator:
    """The pre-schema-2 estimator (BEFORE): face mesh in tracking mode, PnP from the last pose."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )
        self._guess = None
        self._tracking = False
        self.landmarks = None

    def __call__(self, crop: np.ndarray) -> Pose | None:
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            self._tracking, self._guess, self.landmarks = False, None, None
            return None
        if not self._tracking:  # first frame twice: the same regime as the tracked frames
            res = self._mesh.process(crop)
            self._tracking = True
            if not res.multi_face_landmarks:
                return None
        h, w = crop.shape[:2]
        pts = np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])
        self.landmarks = pts
        pose, self._guess = solve_pose(pts[MESH_INDICES], (w, h), self._guess)
        return pose

    def close(self) -> None:
        self._mesh.close()


def _angle(rot: np.ndarray) -> np.ndarray:
    cos = (np.trace(rot, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def crop_box_of(path: Path, seconds: float) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The clip crop box label would choose for the first ``seconds`` of a video."""
    with FaceDetector() as det:
        dets, size = [], None
        for f in read_frames(path, 0.0, seconds, FPS):
            size = (f.shape[1], f.shape[0])
            dets.append(det(f))
    track = track_main_face(dets, FPS, 0.5, frame_size=size)
    if not track.ok:
        raise SystemExit(f"{path.name}: {track.reason}")
    return clip_crop_box(track.boxes, 1.5, frame_size=size), size


def pose_series(path: Path, seconds: float, crop_box) -> dict[str, dict]:
    """BEFORE, HELD and AFTER poses [F, 6], velocities and held-frame masks on the same crops.

    HELD = issue 12 item 1's method (smooth_poses, holds keep their pose: velocity 0 on every
    hold of a 25 fps source); AFTER = label now (the same, then resample_poses onto the 30 FPS
    times). Both come from one run of the new estimator."""
    legacy, new = LegacyHeadPoseEstimator(), HeadPoseEstimator()
    out = {k: {"poses": []} for k in ("before", "after")}
    held, prev = [], None
    source: list[int] = []
    for frame in read_video_frames(path, 0.0, seconds, FPS, source_index=source):
        crop = crop_square(_to_rgb(frame, None), crop_box, SIZE)
        held.append(prev is not None and np.array_equal(crop, prev))
        prev = crop
        for key, est in (("before", legacy), ("after", new)):
            out[key]["poses"].append(est(crop))
    legacy.close()
    new.close()
    held = np.array(held)
    src = np.array(source[: len(held)])
    raw_before, _ = fill_missing(out["before"]["poses"])
    raw, _ = fill_missing(out["after"]["poses"])
    smooth = smooth_poses(raw, held, SIGMA)
    series = {"before": raw_before, "held": smooth, "after": resample_poses(smooth, src)}
    res = {}
    for key, poses in series.items():
        res[key] = {"poses": poses, "velocity": rotation_velocity(poses)[0], "held": held, "source": src}
    return res


def cost(path: Path, seconds: float = 3.0) -> dict[str, tuple[float, float]]:
    """Median CPU and wall ms per estimator call, each estimator alone on the same 512² crops."""
    box, _ = crop_box_of(path, seconds)
    crops = [crop_square(f, box, SIZE) for f in read_frames(path, 0.0, seconds, FPS)]
    res = {}
    for key, make in (("before", LegacyHeadPoseEstimator), ("after", HeadPoseEstimator)):
        est, cpu, wall = make(), [], []
        for c in crops:
            t, w = time.process_time(), time.perf_counter()
            est(c)
            cpu.append(time.process_time() - t)
            wall.append(time.perf_counter() - w)
        est.close()
        res[key] = (1e3 * float(np.median(cpu)), 1e3 * float(np.median(wall)))
    return res


def duration(path: Path) -> float:
    return float(frame_times(path)[-1])


def source_frames(path: Path, seconds: float, fps: float) -> list[np.ndarray]:
    return list(read_frames(path, 0.0, seconds, fps))


def rotated_video(src: Path, dest: Path, seconds: float, centre, fps: float = 25) -> Path:
    """``src`` turned in-plane about ``centre`` by 10°·sin(2πt/3), frame by frame at its own rate."""
    if not dest.exists():
        frames = source_frames(src, seconds, fps)
        h, w = frames[0].shape[:2]
        with Mp4Writer(dest, fps=fps, crf=12, size=(w & ~1, h & ~1)) as mp4:
            for k, f in enumerate(frames):
                m = cv2.getRotationMatrix2D(centre, 10 * np.sin(2 * np.pi * k / fps / 3), 1.0)
                out = cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                mp4.write(np.ascontiguousarray(out[: h & ~1, : w & ~1]))
    return dest


def paused_video(src: Path, dest: Path, seconds: float, at_s: float, pause_s: float = 2.0, fps: float = 25):
    """``src`` with the frame at ``at_s`` held for ``pause_s`` seconds, then playing on."""
    if not dest.exists():
        frames = source_frames(src, seconds, fps)
        k = round(at_s * fps)
        frames = frames[:k] + [frames[k]] * round(pause_s * fps) + frames[k:]
        h, w = frames[0].shape[:2]
        with Mp4Writer(dest, fps=fps, crf=12, size=(w & ~1, h & ~1)) as mp4:
            for f in frames:
                mp4.write(np.ascontiguousarray(f[: h & ~1, : w & ~1]))
    return dest


def rotation_truth(name: str, seconds: float, work: Path) -> dict[str, tuple[float, ...]]:
    src = SHARED / "videos" / name
    seconds = min(seconds, duration(src) - 0.1)
    box, _ = crop_box_of(src, seconds)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    rot = rotated_video(src, work / f"rot_{name}", seconds, centre)
    a, b = pose_series(src, seconds, box), pose_series(rot, seconds, box)
    n = len(a["after"]["poses"])
    shown = np.floor(np.arange(n) * 25 / FPS + 1e-9)  # the source frame each 30 FPS frame shows
    res = {}
    for key in ("before", "held", "after"):
        # BEFORE/HELD describe the source frame shown; AFTER the head at the 30 FPS frame's time
        t = np.arange(n) / FPS if key == "after" else shown / 25
        theta = 10 * np.sin(2 * np.pi * t / 3)
        r0, r1 = euler_to_matrix(a[key]["poses"][:, :3]), euler_to_matrix(b[key]["poses"][:, :3])
        rel = _angle(np.swapaxes(r0, -1, -2) @ r1)
        d = r1 @ np.swapaxes(r0, -1, -2)  # the image rotation, in camera axes
        change = _angle(np.swapaxes(d[:-1], -1, -2) @ d[1:])
        e_rel = np.abs(rel - np.abs(theta))
        e_chg = np.abs(change - np.abs(np.diff(theta)))
        res[key] = (np.median(e_rel), np.percentile(e_rel, 95), np.median(e_chg), np.percentile(e_chg, 95))
    return res


def pause_truth(name: str, seconds: float, work: Path) -> dict[str, tuple[float, float]]:
    src = SHARED / "videos" / name
    seconds = min(seconds, duration(src) - 0.1)
    at = seconds / 2
    paused = paused_video(src, work / f"pause_{name}", seconds, at)
    box, _ = crop_box_of(paused, seconds + 2)
    s = pose_series(paused, seconds + 2, box)
    inside = np.arange(round(at * FPS) + 2, round((at + 2) * FPS) - 1)  # frames showing the held one
    return {k: (float(np.median(s[k]["velocity"][inside])), float(s[k]["velocity"][inside].max())) for k in s}


def roll_truth() -> dict[str, float]:
    """The known-roll portrait of tests/test_pose.py: median |speed − |roll step|| (deg/frame)."""
    img = cv2.cvtColor(cv2.imread(str(SHARED / "portraits" / "woman_frontal.jpg")), cv2.COLOR_BGR2RGB)
    k, size = np.arange(100), 900
    roll = np.interp(k, [0, 25, 75, 100], [0, 30, -30, 0])
    shift = np.column_stack([np.linspace(0, 60, 100), np.linspace(0, -30, 100)])
    zoom = np.linspace(0.9, 1.0, 100)
    centre = (img.shape[1] / 2, img.shape[0] / 2)
    src = []
    for i in k:
        m = cv2.getRotationMatrix2D(centre, roll[i], zoom[i])
        m[:, 2] += np.array([size / 2, size / 2]) - centre + shift[i]
        src.append(cv2.warpAffine(img, m, (size, size), borderValue=(110, 110, 110)))
    shown = (np.arange(120) * 25) // 30
    frames = [src[i] for i in shown]
    with FaceDetector() as det:
        track = track_main_face([det(f) for f in frames], FPS, 0.5, frame_size=(size, size))
    box = clip_crop_box(track.boxes, 1.5, frame_size=(size, size))
    crops = [crop_square(f, box, SIZE) for f in frames]
    held = np.r_[False, shown[1:] == shown[:-1]]
    true_step = np.abs(np.diff(roll[shown]))
    # AFTER's truth: the roll's rate at the 30 FPS frame's time (the roll is piecewise linear in
    # source frames: 1.2°/source frame = 1.0° per 30 FPS frame)
    true_rate = np.abs(np.diff(np.interp(np.arange(120) * 25 / 30, k, roll)))
    res = {}
    for key, est in (("before", LegacyHeadPoseEstimator()), ("after", HeadPoseEstimator())):
        raw, _ = fill_missing([est(c) for c in crops])
        est.close()
        if key == "before":
            res[key] = float(np.median(np.abs(rotation_velocity(raw)[0][1:] - true_step)))
            continue
        smooth = smooth_poses(raw, held, SIGMA)
        res["held"] = float(np.median(np.abs(rotation_velocity(smooth)[0][1:] - true_step)))
        after = rotation_velocity(resample_poses(smooth, shown))[0][1:]
        res["after"] = float(np.median(np.abs(after - true_rate)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length used of each truth video")
    ap.add_argument("--work", type=Path, default=Path("/tmp/emokit-bench-pose"))
    ap.add_argument("--sigma", type=float, default=POSE_SMOOTH_SIGMA, help="smooth_poses sigma (AFTER)")
    ap.add_argument("--only", choices=["truth", "videos"], help="run one half")
    args = ap.parse_args()
    global SIGMA
    SIGMA = args.sigma
    args.work.mkdir(parents=True, exist_ok=True)

    if args.only != "videos":
        truth(args)
    if args.only != "truth":
        videos(args)


def truth(args: argparse.Namespace) -> None:
    print(f"AFTER smooth_poses sigma = {SIGMA:g} distinct frames")
    print("rotation θ(t)=10°·sin(2πt/3): error of |relative rotation| (median, p95, deg) and of its")
    print("frame-to-frame change (median, p95, deg/frame); targets ≤ 0.2, ≤ 0.6, ≤ 0.1")
    for name in TRUTH:
        r = rotation_truth(name, args.seconds, args.work)
        for k, v in r.items():
            print(f"  {name:32s} {k:6s} rel {v[0]:.3f} / {v[1]:.3f}   change {v[2]:.3f} / {v[3]:.3f}")
    print("pause (one frame held 2 s): velocity inside (median, max; deg/frame); target median ≤ 0.05")
    for name in TRUTH:
        for k, v in pause_truth(name, args.seconds, args.work).items():
            print(f"  {name:32s} {k:6s} {v[0]:.3f} / {v[1]:.3f}")
    r = roll_truth()
    print("known-roll portrait: median |velocity − |roll step|| (deg/frame); bound ≤ 0.15")
    print(f"  before {r['before']:.3f}   held {r['held']:.3f}   after {r['after']:.3f}")


def videos(args: argparse.Namespace) -> None:
    print("estimator alone on 3 s of 512² crops: CPU ms / wall ms per frame (medians)")
    for name in ("speaker_a_25fps_1080x1920.mp4", "speaker_c_25fps_512.mp4"):
        c = cost(SHARED / "videos" / name)
        print(
            f"  {name:38s} before {c['before'][0]:.2f} / {c['before'][1]:.2f}   "
            f"after {c['after'][0]:.2f} / {c['after'][1]:.2f}"
        )
    print("shared talking videos (first --seconds×2 s): velocity, deg per 30 FPS frame")
    print("  on held frames of 25 fps sources (median, p95) | on all frames (median, p90)")
    pooled: dict[str, list] = {"before": [], "held": [], "after": []}
    for name in TALKING:
        path = SHARED / "videos" / name
        secs = min(2 * args.seconds, duration(path) - 0.1)
        box, _ = crop_box_of(path, secs)
        s = pose_series(path, secs, box)
        for k, d in s.items():
            v, h = d["velocity"], d["held"]
            held = f"{np.median(v[h]):.3f} / {np.percentile(v[h], 95):.3f}" if h.any() else "  (no holds)  "
            at = np.flatnonzero(h)
            at = at[(at > 0) & (at < len(v) - 1)]
            if at.size:  # velocity on a hold over its neighbours' mean (1 = a steady speed)
                held += f"  ratio {np.median(v[at] / np.maximum(0.5 * (v[at - 1] + v[at + 1]), 1e-9)):.2f}"
            pooled[k].append(v)
            print(f"  {name:38s} {k:6s} {held} | {np.median(v):.3f} / {np.percentile(v, 90):.3f}")
    print(
        "all talking frames pooled: median / p75 / p90 / p99 (deg/frame; generate's --speed, speed buckets)"
    )
    for k, v in pooled.items():
        q = np.percentile(np.concatenate(v), [50, 75, 90, 99])
        print(f"  {k:6s} " + " / ".join(f"{x:.3f}" for x in q))


if __name__ == "__main__":
    main()
