"""The dataset's Parquet schemas — manifest and label shards — declared once and versioned.

Every file emokit writes carries ``schema_version`` in its Parquet key-value metadata. Shards are
self-contained: a clip row holds the cropped clip's mp4 bytes next to its labels, so pandas or DuckDB
can read a shard alone, and label-only reads skip the video column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from emokit import __version__
from emokit.data.atomic import atomic_path

SCHEMA_VERSION = "2"

OK = "ok"
REJECTED = "rejected"

# One row per clip window, plus one row per rejected input (status="rejected", reason set,
# window columns null).
MANIFEST_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),  # stable: hash of source content + window frames
        ("status", pa.string()),  # "ok" | "rejected"
        ("reason", pa.string()),  # one line, set when rejected
        ("source_path", pa.string()),
        ("source_sha256", pa.string()),
        ("source_bytes", pa.int64()),
        ("source_duration_s", pa.float64()),
        ("fps", pa.float64()),  # average frame rate of the source video stream
        ("vfr", pa.bool_()),  # variable frame rate
        ("width", pa.int32()),  # display size, after rotation metadata
        ("height", pa.int32()),
        ("rotation", pa.int32()),  # degrees, from the stream's display matrix
        ("video_stream", pa.int32()),
        ("audio_stream", pa.int32()),  # null when there is no audio
        ("has_audio", pa.bool_()),
        ("video_start_s", pa.float64()),
        ("audio_start_s", pa.float64()),
        ("scene_index", pa.int32()),
        ("window_index", pa.int32()),  # index of this window inside its scene span
        ("start_s", pa.float64()),  # time of the first frame (container clock, as ffmpeg prints)
        ("end_s", pa.float64()),  # presentation time of the first frame after the window
        ("duration_s", pa.float64()),
        ("start_frame", pa.int64()),  # decode-order frame index, inclusive
        ("end_frame", pa.int64()),  # exclusive
        ("detector", pa.string()),
        ("detector_params", pa.string()),  # JSON
    ]
)

# Variable-size lists (lengths are documented per column): pyarrow's Parquet reader rejects null
# entries of fixed-size list columns, and rejected rows leave these null.
_F4 = pa.list_(pa.float32())  # 4 values
_F3 = pa.list_(pa.float32())  # 3 values
_F6 = pa.list_(pa.float32())  # 6 values

# One row per labelled clip (status="ok") or per clip window rejected by label (status="rejected",
# reason set, media and per-frame columns null).
SHARD_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("parent_clip_id", pa.string()),  # the manifest window this clip came from
        ("part", pa.int32()),  # index after jump-cut splitting (0 when not split)
        ("status", pa.string()),
        ("reason", pa.string()),
        ("source_path", pa.string()),
        ("source_sha256", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("fps", pa.int32()),  # always the recipe fps (30)
        ("num_frames", pa.int32()),
        ("size", pa.int32()),  # crop side in pixels
        ("crop_box", _F4),  # square in source pixels x0, y0, x1, y1 (may reach past the borders)
        ("video_mp4", pa.large_binary()),  # H.264 (+ AAC when has_audio) of the crop
        ("has_audio", pa.bool_()),
        ("face_boxes", pa.list_(_F4)),  # per frame, crop pixels x0, y0, x1, y1
        ("face_detected", pa.list_(pa.bool_())),  # per frame; false where interpolated
        ("face_mask_box", _F4),  # union of face_boxes (EMO's face-region mask)
        # per frame yaw, pitch, roll (deg), tx, ty, tz (model units ≈ cm); smoothed over distinct
        # images (emokit.data.pose.smooth_poses), then slerped to each 30 FPS frame's own time
        # from the source frames' times (resample_poses: 25 fps holds move at the head's speed)
        ("pose", pa.list_(_F6)),
        ("velocity", pa.list_(pa.float32())),  # per frame, deg per 30 FPS frame: angle of R_{t-1}^T R_t
        ("velocity_axes", pa.list_(_F3)),  # per frame signed yaw, pitch, roll rates, deg/frame
        ("audio_model", pa.string()),
        ("audio_shape", pa.list_(pa.int32())),  # (frames, layers, dim)
        ("audio_embeddings", pa.large_binary()),  # float16 little-endian, C order, audio_shape
        ("max_faces", pa.int32()),
        ("face_frac", pa.float32()),  # median face box side / source short side
        ("hands_frac", pa.float32()),  # fraction of sampled frames with hands
        ("caption_score", pa.float32()),  # 0..1, burned-in subtitle / caption likelihood
        ("gap_frames", pa.int32()),  # frames whose face box was interpolated
        ("jump_cut_split", pa.bool_()),
        ("flags", pa.list_(pa.string())),  # e.g. multi_face, small_face, hands, captions, no_audio
        # Crops that stay in the picture (issue 12 item 4): the share of the crop square outside the
        # source frame, filled with a blurred mirror (emokit.data.crop); flag "padded" above 0.05.
        ("padded_frac", pa.float32()),
        # Audio-visual sync (emokit.data.avsync / emokit.data.syncnet); flags av_offset, no_lipsync.
        # audio late positive, 30 FPS frames; null if not reliable (mouth_motion: the clip's thirds
        # must agree on the lag)
        ("av_offset_frames", pa.int32()),
        # mouth_motion: z-score of the best lag vs chance (no_lipsync < 3.1); syncnet: Sync-C;
        # null when nothing to measure (no speech, no face)
        ("av_sync_confidence", pa.float32()),
        ("av_method", pa.string()),  # "mouth_motion" or "syncnet"
        # --- source frames (issue 12 item 6) ---
        # per frame, decode-order index in the source video of the frame it shows (sample-and-hold
        # to 30 FPS): equal neighbours = a held frame of a slower source, a step of 2 = a skipped one
        ("source_frame", pa.list_(pa.int32())),
        # --- still clips (issue 12 item 3) ---
        # fraction of the clip's source frames whose face crop does not change from the previous
        # source frame (emokit.data.stillness; sample-and-hold repeats skipped); flag "static"
        ("held_frac", pa.float32()),
        # Jump cuts (emokit.data.jumpcuts): frames of the parent window that no clip keeps (pieces
        # between jump cuts shorter than the clip minimum), the same on every row of that window;
        # 0 and null when nothing was dropped.
        ("dropped_frames", pa.int32()),
        ("drop_reason", pa.string()),  # one line, e.g. "tail 0.77 s after the jump cut at 9.23 s ..."
    ]
)

# Columns a trainer needs without the heavy media, for cheap label-only reads.
LABEL_COLUMNS = [n for n in SHARD_SCHEMA.names if n not in ("video_mp4", "audio_embeddings")]


def _metadata(kind: str, extra: dict[str, str] | None = None) -> dict[bytes, bytes]:
    meta = {"schema_version": SCHEMA_VERSION, "emokit_version": __version__, "kind": kind}
    meta.update(extra or {})
    return {k.encode(): v.encode() for k, v in meta.items()}


def write_table(
    rows: list[dict[str, Any]],
    schema: pa.Schema,
    path: str | Path,
    kind: str,
    extra_meta: dict[str, str] | None = None,
    row_group_size: int | None = None,
) -> None:
    """Validate ``rows`` against ``schema`` and write them atomically with versioned metadata.

    Shards pass ``row_group_size=1``: a reader fetching one clip then reads one row group, not
    the whole shard's media.
    """
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.replace_schema_metadata(_metadata(kind, extra_meta))
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp, compression="zstd", row_group_size=row_group_size, write_page_checksum=True
        )


class CorruptFileError(ValueError):
    """An emokit file that cannot be read back (truncated, overwritten, not Parquet)."""


def read_table(path: str | Path, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
    """Read an emokit Parquet file, refusing ones written with another schema version.

    Pages are checked against their checksums; any failure is one line naming the file."""
    try:
        meta = pq.read_schema(path).metadata or {}
        version = meta.get(b"schema_version", b"?").decode()
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {version}, this emokit reads {SCHEMA_VERSION}")
        return pq.read_table(path, columns=columns, filters=filters, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptFileError(f"{path}: unreadable or corrupt Parquet file ({_first_line(e)})") from None


def verify_table(path: str | Path) -> None:
    """Read every page of a Parquet file, one row group at a time (bounded memory), so a file
    damaged anywhere raises CorruptFileError naming it instead of being counted as good."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except (OSError, pa.ArrowException) as e:
        raise CorruptFileError(f"{path}: unreadable or corrupt Parquet file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
