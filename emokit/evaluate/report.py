"""`emokit evaluate`: how close a generated talking-head video is to a real one, and whether its
mouth follows the speech.

Always computed: PSNR and SSIM of the frames, the Pearson correlation of the mouth opening
(emokit.data.mouth) generated vs reference, the audio-visual lag of both videos with emokit's
weight-free method (emokit.data.avsync; the difference of the two cancels the speaker-dependent
bias of that method) and head-speed statistics (emokit.data.pose). Computed only with weights the
user passes: Sync-C/Sync-D (SyncNet), FID (Inception), FVD (I3D), identity similarity (ArcFace).
A metric that was not computed is None (null in JSON), never 0.

Both videos are read at ``FPS`` (sample-and-hold, as `emokit label` does) over the shorter
duration; the reference is resized to the generated frame size when the aspect ratios match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emokit.data.audio import AudioError, load_audio
from emokit.data.avsync import mouth_audio_sync
from emokit.data.decode import VideoError, frame_times, read_frames
from emokit.data.mouth import MouthTrack, mouth_correlation, mouth_opening
from emokit.data.pose import HeadPoseEstimator, Pose, PoseError, fill_missing, rotation_velocity, smooth_poses
from emokit.evaluate.metrics import psnr, ssim

FPS = 30
SR = 16000
PSNR_CAP_DB = 100.0  # identical videos: PSNR is infinite; reported as this cap (JSON has no inf)

__all__ = ["EvalReport", "EvaluateError", "PSNR_CAP_DB", "evaluate"]


class EvaluateError(ValueError):
    """Inputs that cannot be compared (one-line reason)."""


@dataclass
class EvalReport:
    """Metrics of one generated video against its reference; None = not computed (see notes)."""

    generated: str
    reference: str
    frames: int
    fps: int
    size: tuple[int, int]  # width, height the frames were compared at
    psnr_db: float  # over all frames' pixels, capped at PSNR_CAP_DB
    ssim: float  # mean over frames
    mouth_corr: float | None  # Pearson, generated vs reference mouth opening (0.0: a still mouth)
    mouth_std_generated: float | None
    mouth_std_reference: float | None
    av_sync_confidence: float | None  # generated video vs its audio (emokit.data.avsync)
    av_offset_frames: int | None  # stored only where the method is reliable
    av_lag_frames: int | None  # the method's raw peak lag, generated
    av_lag_reference: int | None  # the same on the reference with its own audio
    av_lag_vs_reference: int | None  # generated − reference: the offset the generation added
    head_speed_generated: dict[str, float] | None  # deg/frame at 30 FPS: mean, median, p95
    head_speed_reference: dict[str, float] | None
    head_speed_ratio: float | None  # mean generated / mean reference
    sync_c: float | None = None  # SyncNet confidence (median − min distance), --syncnet
    sync_d: float | None = None  # SyncNet min distance
    sync_offset_frames: int | None = None  # SyncNet offset, 25 FPS frames, audio late positive
    fid: float | None = None  # --inception
    fvd: float | None = None  # --i3d
    csim: float | None = None  # --arcface: mean cosine of generated faces to the reference face
    notes: list[str] = field(default_factory=list)

    def to_json(self, path: str | Path) -> None:
        """Write the report as JSON (atomically: a killed run leaves no partial file)."""
        from emokit.data.atomic import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self), indent=2, allow_nan=False) + "\n")


def _read(path: Path, what: str, max_width: int | None = None) -> tuple[np.ndarray, float, float]:
    """All frames of ``path`` at FPS (at most ``max_width`` wide) and the video's start, end (s)."""
    try:
        t = frame_times(path)
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / FPS
        start, end = float(t[0]), float(t[-1]) + step
        return np.stack(list(read_frames(path, start, end, FPS, max_width=max_width))), start, end
    except VideoError as e:
        raise EvaluateError(f"{what}: {e}") from e


def _match_size(ref: np.ndarray, gen: np.ndarray) -> np.ndarray:
    h, w = gen.shape[1:3]
    rh, rw = ref.shape[1:3]
    if (rh, rw) == (h, w):
        return ref
    if abs(rw / rh - w / h) > 0.01:
        raise EvaluateError(f"reference is {rw}x{rh} and the generated video {w}x{h}: aspect ratios differ")
    interp = cv2.INTER_AREA if rw > w else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in ref])


def _mesh_pass(frames: np.ndarray) -> tuple[list[np.ndarray | None], dict[str, float] | None]:
    """One face-mesh pass: landmarks per frame (None: no face) and head-speed statistics."""
    marks: list[np.ndarray | None] = []
    poses: list[Pose | None] = []
    holds: list[bool] = []
    with HeadPoseEstimator() as est:
        for f in frames:
            poses.append(est(f))
            prev = marks[-1] if marks else None
            marks.append(est.landmarks)
            holds.append(
                prev is not None and est.landmarks is not None and np.array_equal(est.landmarks, prev)
            )
    try:
        filled, _ = fill_missing(poses)
    except PoseError:
        return marks, None
    speed, _ = rotation_velocity(smooth_poses(filled, np.array(holds)))  # as `emokit label` does
    stats = dict(
        mean=float(speed.mean()), median=float(np.median(speed)), p95=float(np.percentile(speed, 95))
    )
    return marks, stats


def _audio(path: Path | None, start: float, end: float, what: str) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return load_audio(path, start, end, SR)
    except AudioError as e:
        if "no audio stream" in str(e):
            return None
        raise EvaluateError(f"{what}: {e}") from e


def face_crops(frames: np.ndarray, marks: list[np.ndarray | None], size: int, lower: bool) -> np.ndarray:
    """Square crops [F, size, size, 3] around each frame's face-mesh box (``lower``: the mouth
    region SyncNet reads, see emokit.data.syncnet.mouth_squares); a frame without landmarks
    reuses the last box (frames before the first face are crops of the frame's top-left)."""
    from emokit.data.syncnet import mouth_squares, square_crops

    boxes = np.zeros((len(frames), 4))
    last = np.array([0.0, 0.0, float(size), float(size)])
    for i, pts in enumerate(marks):
        if pts is not None:
            last = np.concatenate([pts[:, :2].min(0), pts[:, :2].max(0)])
        boxes[i] = last
    if lower:
        squares = mouth_squares(boxes)
    else:
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        squares = np.stack(
            [(boxes[:, 0] + boxes[:, 2] - side) / 2, (boxes[:, 1] + boxes[:, 3] - side) / 2, side], 1
        )
    return square_crops(frames, squares, size)


def _mouth_track(frames: np.ndarray, marks: list[np.ndarray | None]) -> np.ndarray:
    """MouthTrack features of a video from its mesh pass (what `emokit label` stores per clip)."""
    track = MouthTrack()
    for f, p in zip(frames, marks):
        track.add(p, f)
    return track.series()


def evaluate(
    generated: str | Path,
    reference: str | Path,
    audio: str | Path | None = None,
    syncnet: str | None = None,
    inception: str | None = None,
    i3d: str | None = None,
    arcface: str | None = None,
) -> EvalReport:
    """Metrics of ``generated`` against ``reference`` (see module docstring).

    ``audio``: the speech the video was generated from (default: the generated file's own audio
    track). Weight options load before any video is read, so a wrong path fails at once.
    """
    nets = _load_nets(syncnet, inception, i3d, arcface)
    gen_path, ref_path = Path(generated), Path(reference)
    gen, g0, _ = _read(gen_path, "generated")
    ref, r0, _ = _read(ref_path, "reference", max_width=gen.shape[2])  # never held at full size
    n = min(len(gen), len(ref))
    notes = []
    if len(gen) != len(ref):
        notes.append(f"videos differ in length ({len(gen)} and {len(ref)} frames): compared over the shorter")
    gen, ref = gen[:n], _match_size(ref[:n], gen[:n])
    score = psnr(gen, ref)
    (g_marks, g_speed), (r_marks, r_speed) = _mesh_pass(gen), _mesh_pass(ref)
    g_mouth = np.array([np.nan if p is None else mouth_opening(p) for p in g_marks])
    r_mouth = np.array([np.nan if p is None else mouth_opening(p) for p in r_marks])
    corr = mouth_correlation(g_mouth, r_mouth)
    if corr is None:
        notes.append("mouth correlation: fewer than 10 frames with a face in both videos")
    speech = _audio(
        Path(audio) if audio else gen_path, 0.0 if audio else g0, (0.0 if audio else g0) + n / FPS, "audio"
    )
    ref_speech = _audio(ref_path, r0, r0 + n / FPS, "reference audio")
    g_sync = mouth_audio_sync(_mouth_track(gen, g_marks), speech, FPS, SR)
    r_sync = mouth_audio_sync(_mouth_track(ref, r_marks), ref_speech, FPS, SR)
    if speech is None:
        notes.append("A/V sync: no audio (pass --audio or a generated file with sound)")
    report = EvalReport(
        generated=str(gen_path),
        reference=str(ref_path),
        frames=n,
        fps=FPS,
        size=(gen.shape[2], gen.shape[1]),
        psnr_db=min(score, PSNR_CAP_DB),
        ssim=ssim(gen, ref),
        mouth_corr=corr,
        mouth_std_generated=_nanstd(g_mouth),
        mouth_std_reference=_nanstd(r_mouth),
        av_sync_confidence=g_sync.confidence,
        av_offset_frames=g_sync.offset_frames,
        av_lag_frames=g_sync.lag_frames,
        av_lag_reference=r_sync.lag_frames,
        av_lag_vs_reference=None
        if g_sync.lag_frames is None or r_sync.lag_frames is None
        else g_sync.lag_frames - r_sync.lag_frames,
        head_speed_generated=g_speed,
        head_speed_reference=r_speed,
        head_speed_ratio=g_speed["mean"] / r_speed["mean"]
        if g_speed and r_speed and r_speed["mean"] > 0
        else None,
        notes=notes,
    )
    from emokit.evaluate.weighted import weighted_metrics

    weighted_metrics(report, nets, gen, ref, g_marks, r_marks, speech, gen_path, g0, n)
    return report


def _nanstd(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.std()) if len(x) else None


def _load_nets(syncnet, inception, i3d, arcface) -> dict:
    """Load every network the user passed (fail fast, one line each)."""
    nets = {}
    if syncnet:
        from emokit.data.syncnet import load_syncnet

        nets["syncnet"] = load_syncnet(syncnet)
    for key, name in (("inception", inception), ("i3d", i3d), ("arcface", arcface)):
        if name:
            from emokit.evaluate.features import load_feature_net

            nets[key] = load_feature_net(name, key)
    return nets
