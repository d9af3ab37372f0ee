"""`emokit inspect`: a human look at a dataset — contact sheet with face boxes, pose and velocity
plots, and a table of clips, flags and rejections."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pyarrow.parquet as pq

from emokit.data.atomic import atomic_path
from emokit.data.ingest import MANIFEST
from emokit.data.label import SHARDS
from emokit.data.schema import LABEL_COLUMNS, OK, read_table

THUMB = 160
FRAMES_PER_CLIP = 4


@dataclass
class Inspection:
    contact_sheet: Path | None
    pose_plot: Path | None
    clips: list[dict[str, Any]]  # label columns of every shard row
    rejected_inputs: list[dict[str, Any]]  # manifest rows rejected at ingest


def decode_frames(mp4: bytes, indices: list[int]) -> list[np.ndarray]:
    """RGB frames at ``indices`` of an in-memory mp4 (one pass, stops after the last needed)."""
    want = set(indices)
    out: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(mp4), mode="r") as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i in want:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(want):
                break
    return [out[i] for i in indices if i in out]


def _thumbs(row: dict[str, Any]) -> list[np.ndarray]:
    n = row["num_frames"]
    idx = [round(k * (n - 1) / (FRAMES_PER_CLIP - 1)) for k in range(FRAMES_PER_CLIP)]
    thumbs = []
    for i, frame in zip(idx, decode_frames(row["video_mp4"], idx)):
        x0, y0, x1, y1 = (int(round(v)) for v in row["face_boxes"][i])
        colour = (0, 255, 0) if row["face_detected"][i] else (255, 160, 0)
        frame = np.ascontiguousarray(frame)
        cv2.rectangle(frame, (x0, y0), (x1, y1), colour, max(1, frame.shape[0] // 128))
        thumbs.append(cv2.resize(frame, (THUMB, THUMB), interpolation=cv2.INTER_AREA))
    return thumbs


def contact_sheet(rows: list[dict[str, Any]], path: Path, max_clips: int = 32) -> Path:
    """One line per clip: frames spread over the clip with the face box (green: detected, orange:
    interpolated) and a caption with the clip id, length and flags."""
    lines = []
    for row in rows[:max_clips]:
        strip = np.concatenate(_thumbs(row), axis=1)
        bar = np.full((22, strip.shape[1], 3), 255, np.uint8)
        text = f"{row['clip_id'][:10]}  {row['num_frames'] / row['fps']:.1f}s  {' '.join(row['flags'])}"
        cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        lines.append(np.concatenate([bar, strip], axis=0))
    sheet = np.concatenate(lines, axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode the contact sheet for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())
    return path


def pose_plot(rows: list[dict[str, Any]], path: Path, max_clips: int = 16) -> Path:
    """Per clip: yaw/pitch/roll (deg) and rotation velocity (deg/frame) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows[:max_clips]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.2 * len(rows)), squeeze=False)
    for (ax_pose, ax_vel), row in zip(axes, rows):
        pose = np.asarray(row["pose"])
        t = np.arange(len(pose)) / row["fps"]
        for c, name in enumerate(("yaw", "pitch", "roll")):
            ax_pose.plot(t, pose[:, c], label=name, lw=1)
        ax_pose.set_ylabel("deg")
        ax_pose.set_title(f"{row['clip_id'][:10]} head pose", fontsize=9)
        ax_pose.legend(fontsize=7, loc="upper right")
        ax_vel.plot(t, row["velocity"], color="k", lw=1)
        ax_vel.set_ylabel("deg/frame")
        ax_vel.set_title("rotation velocity", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("s")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def inspect_dataset(dataset: str | Path, out: str | Path | None = None) -> Inspection:
    """Write ``contact_sheet.png`` and ``pose.png`` (under ``out``, default DATASET/inspect)."""
    dataset = Path(dataset)
    out = Path(out) if out else dataset / "inspect"
    manifest = dataset / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest at {manifest}: run `emokit ingest` first")
    rejected_inputs = [r for r in read_table(manifest).to_pylist() if r["status"] != OK]
    shards = sorted((dataset / SHARDS).glob("shard-*.parquet"))
    clips = [r for s in shards for r in read_table(s, columns=LABEL_COLUMNS).to_pylist()]
    ok = [r for r in clips if r["status"] == OK]
    sheet = plot = None
    if ok:
        ids = {r["clip_id"] for r in ok[:32]}
        # only the shown clips' rows, media included; the rest of each shard stays on disk
        media = [
            r for s in shards for r in pq.read_table(s, filters=[("clip_id", "in", sorted(ids))]).to_pylist()
        ]
        sheet = contact_sheet(media, out / "contact_sheet.png")
        plot = pose_plot(ok, out / "pose.png")
    return Inspection(sheet, plot, clips, rejected_inputs)
