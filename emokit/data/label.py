"""`emokit label`: clip windows → 30 FPS face crops, boxes, head pose, velocities, Wav2Vec tokens,
quality flags → self-contained Parquet shards.

:func:`label_window` is the stage function: one manifest window in, its shard rows out (one per
clip after jump-cut splitting, or one rejected row with a reason); it never raises for bad input.
:func:`label` groups the manifest's usable windows into fixed shards (window i goes to shard
i // shard_size), runs the stage over the windows of shards not yet written, and writes each shard
atomically as soon as its windows are done — a killed run loses at most the shards in flight, and a
rerun produces the same shards.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emokit.config import LabelConfig, as_dict
from emokit.data.atomic import remove_stale_temps
from emokit.data.audio import AudioError, load_audio
from emokit.data.crop import CropError, clip_crop_box, to_crop_coords, union_box
from emokit.data.decode import VideoError, read_video_frames
from emokit.data.encode import encode_mp4
from emokit.data.executor import Failed, run
from emokit.data.faces import FaceBox, FaceDetector
from emokit.data.frames import WindowFrames
from emokit.data.ingest import MANIFEST, clip_id, reason_kind
from emokit.data.jumpcuts import find_jump_cuts
from emokit.data.pose import HeadPoseEstimator, PoseError, fill_missing, rotation_velocity
from emokit.data.quality import HandsDetector, caption_score
from emokit.data.schema import OK, REJECTED, SHARD_SCHEMA, read_table, write_table
from emokit.data.track import NO_FACE, face_missing, track_main_face
from emokit.data.wav2vec import AudioEncoder
from emokit.data.windows import frame_windows

SHARDS = "shards"
CAPTION_WIDTH = 640  # caption_score's working width
CAPTION_SAMPLES = 12
HANDS_EVERY = 15  # hands are a clip-level flag: two looks per second are plenty
CAPTION_FLAG = 0.5
HANDS_FLAG = 0.2


def shard_path(dataset: Path, index: int) -> Path:
    return dataset / SHARDS / f"shard-{index:05d}.parquet"


def _base_row(window: dict[str, Any]) -> dict[str, Any]:
    row = dict.fromkeys(SHARD_SCHEMA.names)
    row.update(parent_clip_id=window["clip_id"], source_path=window["source_path"],
               source_sha256=window["source_sha256"])
    return row


def _rejected(window: dict[str, Any], reason: str) -> dict[str, Any]:
    row = _base_row(window)
    row.update(clip_id=window["clip_id"], part=0, status=REJECTED, reason=reason,
               start_s=window["start_s"], end_s=window["end_s"], has_audio=window["has_audio"])
    return row


class _Models:
    """Per-process models, loaded once and reused for every window that process labels."""

    encoders: dict[tuple[str, str], AudioEncoder] = {}

    @classmethod
    def audio(cls, model: str, layers: str, cfg: LabelConfig) -> AudioEncoder:
        key = (model, layers)
        if key not in cls.encoders:
            cls.encoders[key] = AudioEncoder(model, layers=layers, chunk_s=cfg.audio_chunk_s,
                                             overlap_s=cfg.audio_overlap_s)
        return cls.encoders[key]


def _poses(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with HeadPoseEstimator() as est:
        return fill_missing([est(c) for c in crops])


@dataclass
class _Part:
    start: int  # frame indices into the window's 30 FPS frames, end exclusive
    end: int
    crop_box: tuple[int, int, int, int]
    crops: list[np.ndarray]
    poses: np.ndarray
    pose_found: np.ndarray


def _make_part(frames: WindowFrames, boxes, start, end, cfg) -> _Part:
    crop_box = clip_crop_box(boxes[start:end], cfg.crop_scale, frames.size)
    crops = [frames.crop(i, crop_box, cfg.size) for i in range(start, end)]
    poses, found = _poses(crops)
    return _Part(start, end, crop_box, crops, poses, found)


def _decode_and_detect(window: dict[str, Any], cfg: LabelConfig):
    """Decode the window once, detecting faces on small RGB copies as frames arrive.

    Returns (frames, detections in full-frame pixels, None) or (None, None, reason). A run of
    frames without any face longer than ``max_gap_s`` rejects the clip whatever follows (the main
    face would have that gap), so decoding stops there: faceless footage costs a fraction of a
    second instead of a full decode.
    """
    max_gap = round(cfg.max_gap_s * cfg.fps)
    frames: WindowFrames | None = None
    detections: list[list[FaceBox]] = []
    gap = 0
    seen = False
    source = read_video_frames(window["source_path"], window["start_s"], window["end_s"], cfg.fps,
                               window["video_stream"])
    with FaceDetector(cfg.min_face_confidence, cfg.detect_width) as detector:
        for frame in source:
            if frames is None:
                frames = WindowFrames([frame])
                k = frames.width / min(frames.width, cfg.detect_width)
            else:
                frames.frames.append(frame)
            boxes = detector(frames.small(len(frames) - 1, cfg.detect_width))
            detections.append([FaceBox(b.x0 * k, b.y0 * k, b.x1 * k, b.y1 * k, b.score) for b in boxes])
            seen |= bool(boxes)
            gap = 0 if boxes else gap + 1
            if gap > max_gap:
                return None, None, face_missing(gap / cfg.fps) if seen else NO_FACE
    return frames, detections, None


def label_window(
    window: dict[str, Any],
    cfg: LabelConfig,
    audio_model: str | None,
    bounds: tuple[float, float] = (3.0, 12.0),
) -> list[dict[str, Any]]:
    """Shard rows for one manifest window (see module docstring). ``audio_model`` None skips
    Wav2Vec (clips get the no_audio flag); ``bounds`` are the clip length limits in seconds,
    kept when a jump cut splits the window."""
    fps = cfg.fps
    try:
        frames, detections, reason = _decode_and_detect(window, cfg)
    except VideoError as e:
        return [_rejected(window, f"cannot decode: {e}")]
    if reason is not None:
        return [_rejected(window, reason)]
    track = track_main_face(detections, fps, cfg.max_gap_s, frames.size, cfg.min_face_frac)
    if not track.ok:
        return [_rejected(window, track.reason)]
    try:
        return _label_track(window, cfg, audio_model, bounds, frames, track)
    except PoseError:
        return [_rejected(window, "no head pose (face mesh found no face in the crop)")]
    except CropError as e:
        return [_rejected(window, f"cannot crop: {e}")]


def _label_track(window, cfg, audio_model, bounds, frames: WindowFrames, track) -> list[dict[str, Any]]:
    fps = cfg.fps
    boxes = track.boxes
    whole = _make_part(frames, boxes, 0, len(frames), cfg)
    cuts = find_jump_cuts(boxes, whole.poses[:, :3], cfg.jump_box_frac, cfg.jump_rotation_deg)
    pieces = frame_windows(len(frames), fps, cuts, *bounds)
    if not pieces:
        return [_rejected(window, f"jump cuts at frames {cuts} leave no piece of {bounds[0]:g} s or more")]
    split = pieces != [(0, len(frames))]
    parts = [whole] if not split else [_make_part(frames, boxes, a, b, cfg) for a, b in pieces]
    step = max(1, len(frames) // CAPTION_SAMPLES)
    captions = caption_score([frames.small(i, CAPTION_WIDTH, "AREA")
                              for i in range(0, len(frames), step)][:CAPTION_SAMPLES])
    rows = []
    for k, part in enumerate(parts):
        rows.append(_part_row(window, cfg, audio_model, track, part, k, split, captions))
    return rows


def _part_row(window, cfg, audio_model, track, part: _Part, k: int, split: bool, captions: float):
    fps = cfg.fps
    n = part.end - part.start
    start_s = window["start_s"] + part.start / fps
    end_s = window["start_s"] + part.end / fps
    row = _base_row(window)
    cid = window["clip_id"] if not split else clip_id(window["source_sha256"], -part.start, -part.end)
    row.update(clip_id=cid, part=k, status=OK, start_s=start_s, end_s=end_s, fps=fps, num_frames=n,
               size=cfg.size, crop_box=list(map(float, part.crop_box)), jump_cut_split=split)
    flags: list[str] = []
    audio = None
    if window["has_audio"] and audio_model is not None:
        try:
            audio = load_audio(window["source_path"], start_s, end_s, 16000)
        except AudioError as e:
            flags.append("audio_error")
            row["reason"] = f"audio: {e}"
    if audio is not None:
        enc = _Models.audio(audio_model, cfg.audio_layers, cfg)
        tokens = enc(audio, n, fps)
        row.update(audio_model=audio_model, audio_shape=list(tokens.shape),
                   audio_embeddings=np.ascontiguousarray(tokens, dtype="<f2").tobytes())
    else:
        flags.append("no_audio")
    row["has_audio"] = audio is not None
    row["video_mp4"] = encode_mp4(part.crops, fps=fps, audio=audio, audio_sr=16000, crf=cfg.crf)
    boxes = to_crop_coords(track.boxes[part.start:part.end], part.crop_box, cfg.size)
    speed, axes = rotation_velocity(part.poses)
    with HandsDetector(every=HANDS_EVERY) as hands:
        hands_frac = hands(part.crops)
    counts = track.face_counts[part.start:part.end]
    detected = track.detected[part.start:part.end]
    row.update(
        face_boxes=boxes.astype(np.float32).tolist(), face_detected=detected.tolist(),
        face_mask_box=list(map(float, union_box(boxes))),
        pose=part.poses.astype(np.float32).tolist(), velocity=speed.astype(np.float32).tolist(),
        velocity_axes=axes.astype(np.float32).tolist(),
        max_faces=int(track.max_faces), face_frac=float(track.face_frac),
        hands_frac=float(hands_frac), caption_score=float(captions),
        gap_frames=int((~detected).sum()),
    )
    if track.max_faces > 1 or counts.max(initial=0) > 1:
        flags.append("multi_face")
    if hands_frac >= HANDS_FLAG:
        flags.append("hands")
    if captions >= CAPTION_FLAG:
        flags.append("captions")
    if not part.pose_found.all():
        flags.append("pose_gaps")
    row["flags"] = sorted(set(flags))
    return row


@dataclass
class LabelSummary:
    shards_dir: Path
    windows: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    clips: int = 0
    clip_seconds: float = 0.0
    split_windows: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    rejected: dict[str, str] = field(default_factory=dict)  # clip id → reason

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(reason_kind(r) for r in self.rejected.values())


class _LabelOne:
    """Picklable stage callable; caps torch threads so parallel workers do not oversubscribe."""

    def __init__(self, cfg: LabelConfig, audio_model: str | None, bounds, threads: int) -> None:
        self.cfg, self.audio_model, self.bounds, self.threads = cfg, audio_model, bounds, threads

    def __call__(self, window: dict[str, Any]) -> list[dict[str, Any]]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return label_window(window, self.cfg, self.audio_model, self.bounds)
        finally:
            torch.set_num_threads(before)  # in-process runs (workers=1) leave the caller as it was


def usable_windows(dataset: Path) -> list[dict[str, Any]]:
    """The manifest's ok windows, in manifest order (the order that fixes shard membership)."""
    manifest = dataset / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest at {manifest}: run `emokit ingest ... -o {dataset}` first")
    return [r for r in read_table(manifest).to_pylist() if r["status"] == OK]


def label(
    dataset: str | Path,
    cfg: LabelConfig | None = None,
    bounds: tuple[float, float] = (3.0, 12.0),
    workers: int | None = None,
    engine: str = "local",
    progress: bool = True,
) -> LabelSummary:
    """Label every usable window of ``dataset``'s manifest into ``dataset/shards``; resumable."""
    cfg = cfg or LabelConfig()
    dataset = Path(dataset)
    windows = usable_windows(dataset)
    out = dataset / SHARDS
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    summary = LabelSummary(shards_dir=out, windows=len(windows))
    groups = [windows[i:i + cfg.shard_size] for i in range(0, len(windows), cfg.shard_size)]
    meta = {"label_config": json.dumps(as_dict(cfg), sort_keys=True)}
    for stale in sorted(out.glob("shard-*.parquet"))[len(groups):]:
        stale.unlink()  # the manifest shrank or --shard-size grew
    todo = [k for k in range(len(groups)) if not _shard_done(shard_path(dataset, k), groups[k], meta)]
    summary.shards_skipped = len(groups) - len(todo)
    pending = [(k, j, w) for k in todo for j, w in enumerate(groups[k])]
    audio_model = cfg.audio_model
    if any(w["has_audio"] for _, _, w in pending):
        _Models.audio(audio_model, cfg.audio_layers, cfg)  # fail fast, before any worker starts
    n_workers = workers or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // max(1, n_workers))
    stage = _LabelOne(cfg, audio_model, bounds, threads)
    results: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(dict)
    failed: set[int] = set()
    bar = tqdm(total=len(pending), desc="label", unit="clip", disable=not progress)
    for done in run(stage, [w for _, _, w in pending], workers=n_workers, engine=engine):
        k, j, window = pending[done.index]
        rows = done.result
        if isinstance(rows, Failed):  # reported, and its shard left unwritten: a rerun retries it
            summary.rejected[window["clip_id"]] = f"internal error: {rows.reason}"
            failed.add(k)
            rows = []
        results[k][j] = rows
        bar.update()
        if len(results[k]) == len(groups[k]):
            by_window = results.pop(k)
            if k in failed:
                continue
            shard_rows = [r for jj in range(len(groups[k])) for r in by_window[jj]]
            write_table(shard_rows, SHARD_SCHEMA, shard_path(dataset, k), "shard", meta, row_group_size=1)
            summary.shards_written += 1
    bar.close()
    _count(summary, dataset, len(groups))
    return summary


def _shard_done(path: Path, group: list[dict[str, Any]], meta: dict[str, str]) -> bool:
    """A shard counts as done only if it holds exactly this group's windows, labelled with this
    recipe; otherwise (changed manifest, --shard-size, --size, audio model...) it is redone."""
    if not path.exists():
        return False
    try:
        table = read_table(path, columns=["parent_clip_id"])
    except (OSError, ValueError):
        return False
    stored = (table.schema.metadata or {}).get(b"label_config", b"").decode()
    parents = list(dict.fromkeys(table.column("parent_clip_id").to_pylist()))
    return stored == meta["label_config"] and parents == [w["clip_id"] for w in group]


def _count(summary: LabelSummary, dataset: Path, n_shards: int) -> None:
    cols = ["clip_id", "parent_clip_id", "status", "reason", "num_frames", "fps", "jump_cut_split",
            "flags"]
    split_parents = set()
    for k in range(n_shards):
        if not shard_path(dataset, k).exists():
            continue  # a worker failed on one of its windows (already in summary.rejected)
        for r in read_table(shard_path(dataset, k), columns=cols).to_pylist():
            if r["status"] == OK:
                summary.clips += 1
                summary.clip_seconds += r["num_frames"] / r["fps"]
                summary.flags.update(r["flags"])
                if r["jump_cut_split"]:
                    split_parents.add(r["parent_clip_id"])
            else:
                summary.rejected[r["clip_id"]] = r["reason"]
    summary.split_windows = len(split_parents)
