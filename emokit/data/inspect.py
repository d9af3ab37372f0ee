"""`emokit inspect`: a human look at a dataset — contact sheet, pose and speed plots, a clip table.

Every clip is named the way a person finds it again: source file and time span in the source
(seconds, container clock, as ffmpeg prints), with its id last. The contact sheet shows, per clip,
the source frame at the clip's start with the crop square (yellow; grey canvas where it leaves the
frame, i.e. soft padding) and the clip's face box union (green), then crop frames at the times
printed under them with the face box (green: detected, orange: interpolated), and the clip's
flags — whatever ``flags`` holds, so flags added later show without a change here. Numbers carry
their units everywhere; the table and the sheet also list any scalar column they do not know by
name (columns added later), as ``name=value``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from emokit.data.atomic import atomic_path
from emokit.data.decode import VideoError, read_frames
from emokit.data.ingest import MANIFEST
from emokit.data.label import SHARDS
from emokit.data.schema import LABEL_COLUMNS, OK, read_table

THUMB = 176  # crop thumbnail side, and the height of the source frame panel (px)
FRAMES_PER_CLIP = 4
SHEET_CLIPS = 32
PLOT_CLIPS = 16
GREEN, ORANGE, YELLOW, RED = (40, 200, 60), (255, 150, 0), (255, 215, 0), (200, 30, 30)
CANVAS = (100, 108, 116)  # blue-grey outside the source frame (a colour text never draws)
# Columns shown by name with units (``_known_numbers``); any other scalar column is shown raw.
_NOT_SHOWN = {
    "clip_id", "parent_clip_id", "part", "status", "reason", "source_path", "source_sha256",
    "start_s", "end_s", "fps", "num_frames", "size", "has_audio", "audio_model", "jump_cut_split",
    "max_faces", "face_frac", "hands_frac", "caption_score", "gap_frames", "padded_frac",
}  # fmt: skip


@dataclass
class Inspection:
    contact_sheet: Path | None
    pose_plot: Path | None
    clips: list[dict[str, Any]]  # label columns of every shard row, by source and start time
    rejected_inputs: list[dict[str, Any]]  # manifest rows rejected at ingest


def clip_name(row: dict[str, Any]) -> str:
    """``file.mp4 12.00–22.00 s``: where the clip is in its source."""
    return f"{Path(row['source_path']).name} {row['start_s']:.2f}–{row['end_s']:.2f} s"


def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["source_path"] or "", r["start_s"] or 0.0, r["part"] or 0))


def _speed(row: dict[str, Any]) -> tuple[float, float]:
    """Median and 95th percentile of the clip's rotation speed, deg per 30 FPS frame."""
    v = np.asarray(row.get("velocity") or [np.nan], dtype=np.float64)
    return float(np.nanmedian(v)), float(np.nanpercentile(v, 95))


def _known_numbers(row: dict[str, Any]) -> list[str]:
    """The clip's numbers, each with its unit."""
    out = [f"{row['num_frames']} frames at {row['fps']} FPS"]
    med, p95 = _speed(row)
    out.append(f"head speed median {med:.2f}, p95 {p95:.2f} deg/frame")
    if row.get("face_frac") is not None:
        out.append(f"face {100 * row['face_frac']:.0f} % of short side")
    if row.get("gap_frames"):
        out.append(f"{row['gap_frames']} interpolated frames")
    if row.get("padded_frac"):
        out.append(f"padded {100 * row['padded_frac']:.1f} % of crop")
    return out


def _other_numbers(row: dict[str, Any]) -> list[str]:
    """Scalar columns this module does not know by name (added by later features), raw."""
    out = []
    for key, value in row.items():
        if key in _NOT_SHOWN or value is None or isinstance(value, (list, bytes, dict)):
            continue
        out.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return out


def clip_table(clips: list[dict[str, Any]]) -> list[str]:
    """One line per clip (consecutive rejected windows of a source with one reason: one line),
    under a header of names and units."""
    names = ("source", "start–end", "length", "status", "faces", "face", "speed p50", "padded")
    units = ("", "(s)", "(s)", "", "(max)", "(% short side)", "(deg/frame)", "(% of crop)")
    lines: list[tuple[str, ...]] = []
    rows = _order(clips)
    i = 0
    while i < len(rows):
        r = rows[i]
        src, span = Path(r["source_path"] or "?").name, f"{r['start_s']:.2f}–{r['end_s']:.2f}"
        if r["status"] == OK:
            extra = " ".join(_other_numbers(r))
            tail = " ".join(r["flags"] or []) or "-"
            lines.append((src, span, f"{r['num_frames'] / r['fps']:.1f}", "ok", str(r["max_faces"]),
                          f"{100 * r['face_frac']:.0f}", f"{_speed(r)[0]:.2f}",
                          f"{100 * (r.get('padded_frac') or 0.0):.1f}",
                          f"{tail}  {extra}".rstrip(), r["clip_id"][:12]))  # fmt: skip
            i += 1
            continue
        j = i + 1
        while j < len(rows) and rows[j]["status"] != OK and rows[j]["source_path"] == r["source_path"]:
            if rows[j]["reason"] != r["reason"]:
                break
            j += 1
        status = "rejected" if j - i == 1 else f"rejected ×{j - i}"
        span = f"{r['start_s']:.2f}–{rows[j - 1]['end_s']:.2f}"
        lines.append((src, span, "", status, "", "", "", "", r["reason"] or "", r["clip_id"][:12]))
        i = j
    widths = [max(len(x[k]) for x in [names, units, *lines]) for k in range(len(names))]

    def fmt(cols: Sequence[str], tail: str) -> str:
        cells = [c.ljust(w) if k in (0, 1, 3) else c.rjust(w) for k, (c, w) in enumerate(zip(cols, widths))]
        return ("  ".join(cells) + "  " + tail).rstrip()

    return [
        fmt(names, "flags / reason  [clip id]"),
        fmt(units, ""),
        *(fmt(x[:-2], f"{x[-2]}  [{x[-1]}]") for x in lines),
    ]


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


@lru_cache(maxsize=8)
def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _text(image: np.ndarray, xy: tuple[int, int], text: str, colour=(0, 0, 0), size: int = 13) -> None:
    """Draw ``text`` on an RGB array in place (DejaVu Sans, which matplotlib ships)."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    ImageDraw.Draw(pil).text(xy, text, fill=colour, font=_font(size))
    image[:] = np.asarray(pil)


def _wrap(text: str, width: int, size: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide."""
    font, out, line = _font(size), [], ""
    for word in text.split(" "):
        if line and font.getlength(f"{line} {word}") > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*out, line]


def _band(width: int, lines: list[tuple[str, tuple[int, int, int]]], size: int = 13) -> np.ndarray:
    """White band with ``lines`` of text, each wrapped to the band's width."""
    wrapped = [(part, colour) for text, colour in lines for part in _wrap(text, width - 12, size)]
    band = np.full((6 + (size + 5) * len(wrapped), width, 3), 255, np.uint8)
    for k, (text, colour) in enumerate(wrapped):
        _text(band, (6, 3 + k * (size + 5)), text, colour, size)
    return band


def _source_panel(row: dict[str, Any], window: dict[str, Any] | None) -> np.ndarray:
    """The source frame at the clip's start, on a grey canvas that holds the crop square too."""
    x0, y0, x1, y1 = (float(v) for v in row["crop_box"])
    frame = None
    if window is not None:
        try:
            start = row["start_s"]
            it = read_frames(row["source_path"], start, start + 1 / 30, 30, window["video_stream"])
            frame = next(iter(it), None)
        except (VideoError, OSError, StopIteration):
            frame = None
    if frame is None:
        panel = np.full((THUMB, THUMB, 3), 235, np.uint8)
        _text(panel, (8, THUMB // 2 - 8), "source not readable", RED, 12)
        return panel
    h, w = frame.shape[:2]
    ex0, ey0, ex1, ey1 = min(0.0, x0), min(0.0, y0), max(float(w), x1), max(float(h), y1)
    k = THUMB / (ey1 - ey0)
    width = max(THUMB // 2, round((ex1 - ex0) * k))
    panel = np.full((THUMB, width, 3), CANVAS, np.uint8)
    fx, fy = round(-ex0 * k), round(-ey0 * k)
    fw, fh = max(1, round(w * k)), max(1, round(h * k))
    small = cv2.resize(frame, (fw, fh), interpolation=cv2.INTER_AREA)
    ph, pw = min(fh, THUMB - fy), min(fw, width - fx)
    panel[fy : fy + ph, fx : fx + pw] = small[:ph, :pw]

    def px(x: float, y: float) -> tuple[int, int]:
        return round((x - ex0) * k), round((y - ey0) * k)

    side = (x1 - x0) / row["size"]
    m = [float(v) for v in row["face_mask_box"]]
    cv2.rectangle(
        panel, px(x0 + m[0] * side, y0 + m[1] * side), px(x0 + m[2] * side, y0 + m[3] * side), GREEN, 1
    )
    a, b = px(x0, y0), px(x1, y1)
    cv2.rectangle(panel, a, (b[0] - 1, b[1] - 1), YELLOW, 2)
    return panel


def _thumbs(row: dict[str, Any]) -> tuple[list[np.ndarray], list[str]]:
    n = row["num_frames"]
    idx = [round(k * (n - 1) / (FRAMES_PER_CLIP - 1)) for k in range(FRAMES_PER_CLIP)]
    thumbs, times = [], []
    for i, frame in zip(idx, decode_frames(row["video_mp4"], idx)):
        x0, y0, x1, y1 = (int(round(v)) for v in row["face_boxes"][i])
        colour = GREEN if row["face_detected"][i] else ORANGE
        frame = np.ascontiguousarray(frame)
        cv2.rectangle(frame, (x0, y0), (x1, y1), colour, max(1, frame.shape[0] // 128))
        thumbs.append(cv2.resize(frame, (THUMB, THUMB), interpolation=cv2.INTER_AREA))
        times.append(f"{row['start_s'] + i / row['fps']:.2f} s")
    return thumbs, times


def _clip_block(row: dict[str, Any], window: dict[str, Any] | None) -> np.ndarray:
    source = _source_panel(row, window)
    thumbs, times = _thumbs(row)
    gap = np.full((THUMB, 6, 3), 255, np.uint8)
    strip = np.concatenate([source, gap, *thumbs], axis=1)
    under = np.full((18, strip.shape[1], 3), 255, np.uint8)
    side = round(row["crop_box"][2] - row["crop_box"][0])
    _text(under, (2, 2), f"source, crop {side} px", (90, 90, 90), 11)
    for k, t in enumerate(times):
        _text(under, (source.shape[1] + 6 + k * THUMB + 4, 2), t, (60, 60, 60), 11)
    flags = row["flags"] or []
    head = _band(
        strip.shape[1],
        [
            (
                f"{clip_name(row)}  ({row['num_frames'] / row['fps']:.1f} s)   clip {row['clip_id'][:12]}",
                (0, 0, 0),
            ),
            ("flags: " + (", ".join(flags) if flags else "none"), RED if flags else (0, 120, 0)),
            ("; ".join(_known_numbers(row) + _other_numbers(row)), (70, 70, 70)),
        ],
        12,
    )
    return np.concatenate([head, strip, under], axis=0)


def contact_sheet(
    rows: list[dict[str, Any]],
    path: Path,
    windows: dict[str, dict[str, Any]] | None = None,
    max_clips: int = SHEET_CLIPS,
    total: int | None = None,
) -> Path:
    """One block per clip: name, flags and numbers; source frame with the crop; crop frames.

    ``windows`` maps manifest clip ids to manifest rows (for the source frame's video stream).
    """
    rows = _order(rows)[:max_clips]
    blocks = [_clip_block(r, (windows or {}).get(r["parent_clip_id"])) for r in rows]
    width = max(b.shape[1] for b in blocks)
    shown = f"{len(rows)} of {total} clips" if total and total > len(rows) else f"{len(rows)} clips"
    legend = _band(
        width,
        [
            (f"emokit inspect: {shown}, by source file and start time (times are source seconds)", (0, 0, 0)),
            (
                "left: source frame at the clip start, crop square yellow (grey = outside the frame, "
                "soft-padded), face union green",
                (70, 70, 70),
            ),
            ("right: crop frames, face box green = detected, orange = interpolated", (70, 70, 70)),
        ],  # fmt: skip
        13,
    )
    parts = [legend]
    for b in blocks:
        pad = np.full((b.shape[0], width - b.shape[1], 3), 255, np.uint8)
        parts += [np.full((8, width, 3), 200, np.uint8), np.concatenate([b, pad], axis=1)]
    sheet = np.concatenate(parts, axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode the contact sheet for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())
    return path


def pose_plot(rows: list[dict[str, Any]], path: Path, max_clips: int = PLOT_CLIPS) -> Path:
    """Per clip: yaw/pitch/roll (deg) and rotation speed (deg/frame) against source time (s);
    frames whose face box was interpolated are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _order(rows)[:max_clips]
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 2.6 * len(rows)), squeeze=False)
    for (ax_pose, ax_vel), row in zip(axes, rows):
        pose = np.asarray(row["pose"], dtype=np.float64)
        t = row["start_s"] + np.arange(len(pose)) / row["fps"]
        missing = ~np.asarray(row["face_detected"], dtype=bool)
        for ax in (ax_pose, ax_vel):
            if missing.any():
                ax.fill_between(t, 0, 1, where=missing, color="orange", alpha=0.25, lw=0,
                                transform=ax.get_xaxis_transform(), label="face interpolated")  # fmt: skip
            ax.set_xlabel("source time (s)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        for c, name in enumerate(("yaw", "pitch", "roll")):
            ax_pose.plot(t, pose[:, c], label=name, lw=1)
        ax_pose.set_ylabel("head pose (deg)", fontsize=8)
        ax_pose.set_title(clip_name(row), fontsize=9, loc="left")
        ax_pose.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        med, p95 = _speed(row)
        ax_vel.plot(t, row["velocity"], color="k", lw=1)
        ax_vel.axhline(med, color="tab:blue", ls="--", lw=1)
        ax_vel.set_ylabel("rotation speed\n(deg/frame, 30 FPS)", fontsize=8)
        flags = ", ".join(row["flags"] or []) or "no flags"
        ax_vel.set_title(
            f"median {med:.2f} (dashed), p95 {p95:.2f} deg/frame; {flags}", fontsize=9, loc="left"
        )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def inspect_dataset(dataset: str | Path, out: str | Path | None = None) -> Inspection:
    """Write ``contact_sheet.png`` and ``pose.png`` (under ``out``, default DATASET/inspect)."""
    dataset = Path(dataset)
    out = Path(out) if out else dataset / "inspect"
    manifest = dataset / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest at {manifest}: run `emokit ingest` first")
    manifest_rows = read_table(manifest).to_pylist()
    rejected_inputs = [r for r in manifest_rows if r["status"] != OK]
    windows = {r["clip_id"]: r for r in manifest_rows if r["status"] == OK}
    shards = sorted((dataset / SHARDS).glob("shard-*.parquet"))
    clips = _order([r for s in shards for r in read_table(s, columns=LABEL_COLUMNS).to_pylist()])
    ok = [r for r in clips if r["status"] == OK]
    sheet = plot = None
    if ok:
        ids = sorted({r["clip_id"] for r in ok[:SHEET_CLIPS]})
        # only the shown clips' rows, media included; the rest of each shard stays on disk
        media = [
            r for s in shards for r in read_table(s, filters=[("clip_id", "in", sorted(ids))]).to_pylist()
        ]
        sheet = contact_sheet(media, out / "contact_sheet.png", windows, total=len(ok))
        plot = pose_plot(ok, out / "pose.png")
    return Inspection(sheet, plot, clips, rejected_inputs)
