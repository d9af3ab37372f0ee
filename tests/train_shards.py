"""Test helper: label shards built from a real video, without running `emokit label`.

Frames come from real media in shared/data (decoded with PyAV, square-cropped, resized, encoded as
H.264 + AAC mp4 bytes like `emokit label` does); audio tokens are random float16 of the shape the
model under test expects. Lets the trainer's tests run before or without the label stage.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import numpy as np

from emokit.data.schema import OK, REJECTED, SHARD_SCHEMA, write_table


def clip_frames(video: Path, start: int, count: int, size: int) -> np.ndarray:
    """``count`` consecutive frames from frame ``start`` of ``video``, centre-cropped square, resized."""
    out = []
    with av.open(str(video)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i < start:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            sq = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side]))
            out.append(sq.to_ndarray(format="rgb24", width=size, height=size))
            if len(out) == count:
                break
    assert len(out) == count, f"{video} has fewer than {start + count} frames"
    return np.stack(out)


def encode_mp4(frames: np.ndarray, fps: int = 30, audio: bool = True) -> bytes:
    """H.264 yuv420p (+ a real-length AAC track of a tone when ``audio``) in an mp4, as bytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = {"crf": "18", "g": "12"}
        aus = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for rgb in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if aus is not None:
            n = int(len(frames) / fps * 16000)
            tone = (0.1 * np.sin(np.arange(n) * 2 * np.pi * 220 / 16000)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(tone[None], format="flt", layout="mono")
            af.sample_rate = 16000
            for p in aus.encode(af):
                out.mux(p)
            for p in aus.encode():
                out.mux(p)
    return buf.getvalue()


def shard_row(
    frames: np.ndarray,
    audio_layers: int,
    audio_dim: int,
    seed: int,
    flags: tuple[str, ...] = (),
    has_audio: bool = True,
    source: str = "fixture.mp4",
) -> dict:
    """One ok SHARD_SCHEMA row for ``frames`` with random float16 audio tokens."""
    n, size = len(frames), frames.shape[1]
    rng = np.random.default_rng(seed)
    box = [size * 0.25, size * 0.2, size * 0.75, size * 0.8]
    audio = rng.standard_normal((n, audio_layers, audio_dim)).astype("<f2")
    velocity = np.abs(rng.normal(0.5, 0.3, n)).astype(np.float32)
    return {
        "clip_id": hashlib.sha256(f"{source}:{seed}".encode()).hexdigest()[:16],
        "parent_clip_id": "parent",
        "part": 0,
        "status": OK,
        "reason": None,
        "source_path": source,
        "source_sha256": "0" * 64,
        "start_s": 0.0,
        "end_s": n / 30,
        "fps": 30,
        "num_frames": n,
        "size": size,
        "crop_box": [0.0, 0.0, float(size), float(size)],
        "video_mp4": encode_mp4(frames, audio=has_audio),
        "has_audio": has_audio,
        "face_boxes": [box] * n,
        "face_detected": [True] * n,
        "face_mask_box": box,
        "pose": [[0.0] * 6] * n,
        "velocity": velocity.tolist(),
        "velocity_axes": [[0.0] * 3] * n,
        "audio_model": "random" if has_audio else None,
        "audio_shape": [n, audio_layers, audio_dim] if has_audio else None,
        "audio_embeddings": audio.tobytes() if has_audio else None,
        "max_faces": 1,
        "face_frac": 0.3,
        "hands_frac": 0.0,
        "caption_score": 0.0,
        "gap_frames": 0,
        "jump_cut_split": False,
        "flags": list(flags) + ([] if has_audio else ["no_audio"]),
    }


def build_dataset(
    root: Path,
    video: Path,
    audio_layers: int,
    audio_dim: int,
    size: int = 64,
    clip_frames_n: int = 24,
    clips: int = 3,
    extras: bool = True,
) -> Path:
    """DATASET/shards/ with ``clips`` usable clips (two shards) and, when ``extras``, one rejected,
    one no-audio and one multi_face clip that the trainer must leave out of stages 2-3."""
    rows = []
    for i in range(clips):
        frames = clip_frames(video, i * clip_frames_n, clip_frames_n, size)
        rows.append(shard_row(frames, audio_layers, audio_dim, seed=i))
    if extras:
        frames = clip_frames(video, 0, clip_frames_n, size)
        rows.append(shard_row(frames, audio_layers, audio_dim, seed=100, has_audio=False))
        rows.append(shard_row(frames, audio_layers, audio_dim, seed=101, flags=("multi_face",)))
        rows.append({"clip_id": "bad", "status": REJECTED, "reason": "no face found"})
    half = (len(rows) + 1) // 2
    for j, part in enumerate([rows[:half], rows[half:]]):
        write_table(part, SHARD_SCHEMA, root / "shards" / f"shard-{j:05d}.parquet", kind="shard")
    return root
