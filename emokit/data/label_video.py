"""The video half of `emokit label`: one manifest window → its clips' crops, boxes, pose, flags.

:func:`label_window` is the worker stage: it decodes the window once at 30 FPS, detects and tracks
the main face, splits at jump cuts, crops, estimates head pose, encodes the crop mp4 (with the
window's audio) and returns the shard rows plus the window's 16 kHz audio. It never imports torch:
Wav2Vec2 runs once in the parent process on that audio (see emokit.data.label), so workers start in
under a second instead of paying torch + transformers (~4 s of CPU each) for every process.
It never raises for bad input: a bad window is one rejected row with a reason.
"""

from __future__ import annotations

import io
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emokit.config import LabelConfig
from emokit.data.audio import AudioError, load_audio
from emokit.data.avsync import mouth_audio_sync
from emokit.data.crop import (
    PADDED_FLAG,
    CropError,
    clip_crop_box,
    padded_fraction,
    square_crop_box,
    to_crop_coords,
    union_box,
)
from emokit.data.decode import VideoError, read_video_frames
from emokit.data.encode import Mp4Writer
from emokit.data.faces import FaceBox, FaceDetector
from emokit.data.frames import WindowFrames
from emokit.data.ingest import clip_id
from emokit.data.jumpcuts import crop_look, dropped_by_cuts, find_jump_cuts
from emokit.data.mouth import MouthTrack
from emokit.data.pose import (
    HeadPoseEstimator,
    Pose,
    PoseError,
    fill_missing,
    resample_poses,
    rotation_velocity,
    smooth_poses,
)
from emokit.data.quality import HandsDetector, caption_score
from emokit.data.schema import OK, REJECTED, SHARD_SCHEMA
from emokit.data.source_flags import source_flags
from emokit.data.stillness import STATIC_FRAC, HeldFrames
from emokit.data.track import NO_FACE, face_missing, track_main_face
from emokit.data.windows import frame_windows

AUDIO_SR = 16000  # wav2vec's rate; also the crop mp4's audio rate
CAPTION_WIDTH = 640  # caption_score's working width
CAPTION_SAMPLES = 12
HANDS_EVERY = 15  # hands are a clip-level flag: two looks per second are plenty
CAPTION_FLAG = 0.5
HANDS_FLAG = 0.2
# Frames are kept as a square of this many face sides around the first face (see
# WindowFrames.keep); a clip whose crop leaves it (the head moved more than ~0.6 face widths)
# is decoded again with whole frames.
KEEP_FACE_SIDES = 3.0

__all__ = ["WindowLabels", "label_window"]


@dataclass
class WindowLabels:
    """A window's shard rows (audio tokens not yet attached) and what the audio stage needs."""

    rows: list[dict[str, Any]]
    frames: int = 0  # the window's frame count at cfg.fps
    offsets: list[int] = field(default_factory=list)  # first window frame of each row (ok rows)
    audio: np.ndarray | None = None  # the window's mono 16 kHz audio, when it has usable audio


def _base_row(window: dict[str, Any]) -> dict[str, Any]:
    row = dict.fromkeys(SHARD_SCHEMA.names)
    row.update(
        parent_clip_id=window["clip_id"],
        source_path=window["source_path"],
        source_sha256=window["source_sha256"],
    )
    return row


def _rejected(window: dict[str, Any], reason: str) -> WindowLabels:
    row = _base_row(window)
    row.update(
        clip_id=window["clip_id"],
        part=0,
        status=REJECTED,
        reason=reason,
        start_s=window["start_s"],
        end_s=window["end_s"],
        has_audio=window["has_audio"],
    )
    return WindowLabels([row])


@dataclass
class _Part:
    start: int  # frame indices into the window's 30 FPS frames, end exclusive
    end: int
    crop_box: tuple[int, int, int, int]
    poses: np.ndarray  # [n, 6] smoothed over distinct frames (what the shard stores)
    pose_found: np.ndarray
    source: np.ndarray  # [n] decode-order index of the source frame each frame shows, from 0
    mp4: bytes
    hands_frac: float
    mouth: np.ndarray  # [n, 3] per-frame MouthTrack features (emokit.data.mouth), NaN: no mesh
    audio: np.ndarray | None  # the part's 16 kHz audio
    held_frac: float
    looks: np.ndarray  # [F, 32, 32] uint8 grey thumbnails of the crops (jump-cut appearance)
    padded_frac: float = 0.0  # share of the crop square outside the frame (soft-padded)
    # Per frame, the estimator's raw pose and landmarks (what a piece cut with the same crop box
    # reuses instead of running the face mesh again: see _make_part's ``meshed``).
    meshed: list[tuple[Pose | None, np.ndarray | None]] = field(default_factory=list)


class _NotKept(Exception):
    """The clip's crop leaves the part of the frames that was kept: decode again, whole."""


def _make_part(frames: WindowFrames, boxes, start, end, cfg, audio, threads, whole=None) -> _Part:
    """Crop frames start..end-1 and stream each crop to the pose estimator, the hands detector
    and the encoder (no crop is kept: 512² RGB is 236 MB for 10 s).

    ``whole``: the window's part (frames 0..F-1) when this is a piece of it after a jump-cut
    split. A piece whose crop box is the window's cuts the very same crops, and the face mesh
    (static-image mode) reads the same image the same way, so its raw poses and landmarks are
    taken from ``whole`` instead of being measured again (the mesh is ~half of a frame's cost);
    everything else (smoothing, hands, stillness, the encode) runs on the piece as before.
    """
    crop_box = clip_crop_box(boxes[start:end], cfg.crop_scale, frames.size)
    reuse = whole is not None and tuple(whole.crop_box) == tuple(crop_box)
    if not frames.covers(crop_box):
        raise _NotKept
    if audio is not None:
        audio = audio[round(start / cfg.fps * AUDIO_SR) : round(end / cfg.fps * AUDIO_SR)]
    buf = io.BytesIO()
    poses: list[Pose | None] = []
    mouth = MouthTrack()
    holds = []  # frame shows the same face-mesh landmarks as the previous one (a held image)
    prev = None
    still = HeldFrames()
    looks = []
    meshed: list[tuple[Pose | None, np.ndarray | None]] = []
    with (
        HeadPoseEstimator() if not reuse else nullcontext() as est,
        HandsDetector(every=HANDS_EVERY) as hands,
        Mp4Writer(
            buf,
            fps=cfg.fps,
            crf=cfg.crf,
            audio=audio,
            audio_sr=AUDIO_SR,
            preset=cfg.x264_preset,
            threads=threads,
        ) as mp4,
    ):
        prev_crop: np.ndarray | None = None
        for i in range(start, end):
            # A held frame (same source frame) is its original's crop; it and a bit-identical
            # image read exactly what the original read (the mesh runs in static-image mode), so
            # neither is cropped or meshed again.
            held = prev_crop is not None and frames.source_index[i] == frames.source_index[i - 1]
            crop = prev_crop if held and prev_crop is not None else frames.crop(i, crop_box, cfg.size)
            same = held or (prev_crop is not None and np.array_equal(crop, prev_crop))
            if reuse:
                pose, landmarks = whole.meshed[i]
            elif not same:
                assert est is not None  # only a reused piece has no estimator
                pose, landmarks = est(crop), est.landmarks
            else:
                pose, landmarks = poses[-1], prev
            poses.append(pose)
            meshed.append((pose, landmarks))
            mouth.add(landmarks, crop)
            holds.append(prev is not None and landmarks is not None and np.array_equal(landmarks, prev))
            prev, prev_crop = landmarks, crop
            still.add(crop, frames.source_index[i])
            looks.append(crop_look(crop))
            hands.add(crop)
            mp4.write(crop)
    raw, found = fill_missing(poses)
    source = np.asarray(frames.source_index[start:end], dtype=np.int64)
    # Smoothed over distinct images, then moved to the 30 FPS frames' own times: a 25 fps
    # source's holds get the head's speed instead of 0 (emokit.data.pose.resample_poses).
    smooth = resample_poses(smooth_poses(raw, np.array(holds)), source)
    padded = padded_fraction(crop_box, frames.size)
    return _Part(
        start,
        end,
        crop_box,
        smooth,
        found,
        source,
        buf.getvalue(),
        hands.fraction,
        mouth.series(),
        audio,
        still.fraction,
        np.stack(looks),
        padded_frac=padded,
        meshed=meshed,
    )


@dataclass
class _Decoded:
    frames: WindowFrames
    detections: list[list[FaceBox]]  # per output frame, full-frame pixels
    caption_frames: list[np.ndarray]  # CAPTION_SAMPLES small copies spread over the window


def _decode_and_detect(
    window: dict[str, Any], cfg: LabelConfig, keep_sides: float | None, threads: int | None
) -> _Decoded | str:
    """Decode the window once, detecting faces on small RGB copies as frames arrive.

    Keeps a square of ``keep_sides`` face sides around the first face of every frame (None: whole
    frames). Returns what label needs or a rejection reason. A run of frames without any face
    longer than ``max_gap_s`` rejects the clip whatever follows (the main face would have that
    gap), so decoding stops there: faceless footage costs a fraction of a second, not a decode.
    """
    max_gap = round(cfg.max_gap_s * cfg.fps)
    n = round((window["end_s"] - window["start_s"]) * cfg.fps)
    step = max(1, n // CAPTION_SAMPLES)
    caption_at = set(range(0, n, step)[:CAPTION_SAMPLES])
    frames: WindowFrames | None = None
    detections: list[list[FaceBox]] = []
    captions: list[np.ndarray] = []
    gap = 0
    seen = False
    source_index: list[int] = []
    source = read_video_frames(
        window["source_path"],
        window["start_s"],
        window["end_s"],
        cfg.fps,
        window["video_stream"],
        threads,
        source_index,
    )
    with FaceDetector(cfg.min_face_confidence, cfg.detect_width) as detector:
        for i, frame in enumerate(source):
            if frames is None:
                frames = WindowFrames(frame, n)
                frames.source_index = source_index
            frames.add(frame)
            if i in caption_at:
                captions.append(frames.small(frame, CAPTION_WIDTH, "AREA"))
            # A hold of a lower-rate source (1 frame in 6 of 25 fps) is the same image, and the
            # detector keeps no state between images: it would read the same boxes.
            held = i > 0 and source_index[i] == source_index[i - 1]
            boxes = list(detections[-1]) if held else _detect(detector, frames, frame, cfg.detect_width)
            detections.append(boxes)
            if boxes and not seen:
                face = detections[-1][0]
                frames.keep(
                    None if keep_sides is None else square_crop_box(face.xyxy(), keep_sides, frames.size)
                )
            seen |= bool(boxes)
            gap = 0 if boxes else gap + 1
            if gap > max_gap:
                return face_missing(gap / cfg.fps) if seen else NO_FACE
    if frames is None:
        return "no video frames in the window"
    return _Decoded(frames, detections, captions)


def _detect(detector: FaceDetector, frames: WindowFrames, frame, width: int) -> list[FaceBox]:
    """Faces of ``frame`` (one of ``frames``') detected on its ``width``-wide copy, in full-frame pixels."""
    small = frames.small(frame, width)
    kx, ky = frames.width / small.shape[1], frames.height / small.shape[0]
    return [FaceBox(b.x0 * kx, b.y0 * ky, b.x1 * kx, b.y1 * ky, b.score) for b in detector(small)]


def label_window(
    window: dict[str, Any],
    cfg: LabelConfig,
    bounds: tuple[float, float] = (3.0, 12.0),
    threads: int | None = None,
) -> WindowLabels:
    """Rows for one manifest window: one per clip after jump-cut splitting, or one rejected row.

    ``bounds`` are the clip length limits in seconds, kept when a jump cut splits the window;
    ``threads`` caps the decoder's and the crop encoder's threads (None: the libraries' defaults,
    about one per core).
    """
    try:
        return _label_decoded(window, cfg, bounds, threads, KEEP_FACE_SIDES)
    except _NotKept:
        pass  # retried below, once the exception (and the first decode it holds) is gone
    return _label_decoded(window, cfg, bounds, threads, None)


def _label_decoded(window, cfg, bounds, threads, keep_sides) -> WindowLabels:
    try:
        decoded = _decode_and_detect(window, cfg, keep_sides, threads)
    except VideoError as e:
        return _rejected(window, f"cannot decode: {e}")
    if isinstance(decoded, str):
        return _rejected(window, decoded)
    frames = decoded.frames
    track = track_main_face(decoded.detections, cfg.fps, cfg.max_gap_s, frames.size, cfg.min_face_frac)
    if track.reason is not None:  # not track.ok
        return _rejected(window, track.reason)
    try:
        return _label_track(
            window, cfg, bounds, frames, track, caption_score(decoded.caption_frames), threads
        )
    except PoseError:
        return _rejected(window, "no head pose (face mesh found no face in the crop)")
    except CropError as e:
        return _rejected(window, f"cannot crop: {e}")


def _label_track(window, cfg, bounds, frames: WindowFrames, track, captions, threads) -> WindowLabels:
    fps = cfg.fps
    boxes = track.boxes
    audio, audio_reason = None, None
    if window["has_audio"]:
        try:
            audio = load_audio(
                window["source_path"], window["start_s"], window["start_s"] + len(frames) / fps, AUDIO_SR
            )
        except AudioError as e:
            audio_reason = f"audio: {e}"
    # The whole window is cropped, posed and encoded in one pass; a window that jump cuts split
    # (rare) is done again per piece, each with its own crop box.
    whole = _make_part(frames, boxes, 0, len(frames), cfg, audio, threads)
    cuts = find_jump_cuts(boxes, whole.looks, cfg.jump_score)
    pieces = frame_windows(len(frames), fps, cuts, *bounds)
    dropped, drop_reason = dropped_by_cuts(len(frames), fps, cuts, pieces, bounds[0], window["start_s"])
    if not pieces:
        rejected = _rejected(window, f"jump cuts at frames {cuts} leave no piece of {bounds[0]:g} s or more")
        rejected.rows[0].update(dropped_frames=dropped, drop_reason=drop_reason)
        return rejected
    split = pieces != [(0, len(frames))]
    parts = (
        [whole]
        if not split
        else [_make_part(frames, boxes, a, b, cfg, audio, threads, whole) for a, b in pieces]
    )
    rows = [
        _part_row(window, cfg, track, part, k, split, captions, audio is not None, audio_reason, audio)
        for k, part in enumerate(parts)
    ]
    for row in rows:
        row.update(dropped_frames=dropped, drop_reason=drop_reason)
    return WindowLabels(rows, len(frames), [p.start for p in parts], audio)


def _part_row(window, cfg, track, part: _Part, k, split, captions, has_audio, audio_reason, audio=None):
    fps = cfg.fps
    n = part.end - part.start
    start_s = window["start_s"] + part.start / fps
    end_s = window["start_s"] + part.end / fps
    row = _base_row(window)
    cid = window["clip_id"] if not split else clip_id(window["source_sha256"], -part.start, -part.end)
    row.update(
        clip_id=cid,
        part=k,
        status=OK,
        start_s=start_s,
        end_s=end_s,
        fps=fps,
        num_frames=n,
        size=cfg.size,
        crop_box=list(map(float, part.crop_box)),
        jump_cut_split=split,
        has_audio=has_audio,
        reason=audio_reason,
        video_mp4=part.mp4,
    )
    flags = ["audio_error"] if audio_reason else []
    boxes = to_crop_coords(track.boxes[part.start : part.end], part.crop_box, cfg.size)
    speed, axes = rotation_velocity(part.poses)
    hands_frac = part.hands_frac
    counts = track.face_counts[part.start : part.end]
    detected = track.detected[part.start : part.end]
    row.update(
        face_boxes=boxes.astype(np.float32).tolist(),
        face_detected=detected.tolist(),
        face_mask_box=list(map(float, union_box(boxes))),
        pose=part.poses.astype(np.float32).tolist(),
        velocity=speed.astype(np.float32).tolist(),
        velocity_axes=axes.astype(np.float32).tolist(),
        max_faces=int(track.max_faces),
        face_frac=float(track.face_frac),
        hands_frac=float(hands_frac),
        caption_score=float(captions),
        gap_frames=int((~detected).sum()),
        # the window's first frame is the manifest's start_frame (a direct call without it: 0)
        source_frame=(int(window.get("start_frame") or 0) + part.source).astype(np.int32).tolist(),
        held_frac=float(part.held_frac),
    )
    if track.max_faces > 1 or counts.max(initial=0) > 1:
        flags.append("multi_face")
    if hands_frac >= HANDS_FLAG:
        flags.append("hands")
    if captions >= CAPTION_FLAG:
        flags.append("captions")
    if not part.pose_found.all():
        flags.append("pose_gaps")
    row["padded_frac"] = float(part.padded_frac)
    if part.padded_frac > PADDED_FLAG:
        flags.append("padded")
    sync = mouth_audio_sync(part.mouth, part.audio, fps, AUDIO_SR)
    row.update(sync.row())
    flags.extend(sync.flags)

    flags += source_flags(part.crop_box, cfg.size, audio, (part.start / fps, part.end / fps), AUDIO_SR)
    if part.held_frac >= STATIC_FRAC:
        flags.append("static")
    row["flags"] = sorted(set(flags))
    return row
