"""`emokit ingest`: raw videos → frame-accurate 3–12 s clip windows in ``DATASET/manifest.parquet``.

The stage function :func:`ingest_source` handles one video and returns its manifest rows — clip
windows, or a single rejected row with a one-line reason — and never raises. :func:`ingest` runs it
over every input with an executor, caches each source's rows (atomic, keyed by content hash and
recipe) so a rerun skips finished sources, and writes the manifest atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from emokit.config import IngestConfig, as_dict
from emokit.data.atomic import remove_stale_temps
from emokit.data.executor import ENGINES, Failed, run
from emokit.data.lock import locks_dataset
from emokit.data.probe import ProbeError, file_sha256, probe
from emokit.data.scenes import DETECTORS, scan_scenes
from emokit.data.schema import MANIFEST_SCHEMA, OK, REJECTED, read_table, write_table
from emokit.data.windows import clip_windows

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}
MANIFEST = "manifest.parquet"
CACHE_DIR = ".ingest"


class InputError(ValueError):
    """A usage error in the inputs (missing path); the run does not start."""


def find_videos(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for video extensions; sorted, no duplicates."""
    found: set[Path] = set()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found.update(
                f.resolve() for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            )
        elif p.is_file():
            found.add(p.resolve())
        else:
            raise InputError(f"input not found: {raw}")
    return sorted(found)


def display_path(path: Path) -> str:
    """``path`` as valid UTF-8: undecodable bytes of a file name become ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def clip_id(source_sha256: str, start_frame: int, end_frame: int) -> str:
    """Stable id: the same content and window give the same id on any machine or path."""
    return hashlib.sha256(f"{source_sha256}:{start_frame}:{end_frame}".encode()).hexdigest()[:20]


def _rejected(path: Path, sha: str | None, size: int | None, reason: str) -> dict[str, Any]:
    row = dict.fromkeys(MANIFEST_SCHEMA.names)
    row.update(
        clip_id=clip_id(sha or display_path(path), -1, -1),
        status=REJECTED,
        reason=reason,
        source_path=display_path(path),
        source_sha256=sha,
        source_bytes=size,
    )
    return row


def ingest_source(path: Path, cfg: IngestConfig) -> list[dict[str, Any]]:
    """Manifest rows of one video: its clip windows, or one rejected row saying why."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # Parquet strings are UTF-8: keep the name's bytes, escaped
        return [_rejected(path, None, None, "file name is not valid UTF-8")]
    try:
        size = path.stat().st_size
        sha = file_sha256(path)
    except OSError as e:
        return [_rejected(path, None, None, f"cannot read file: {e.strerror}")]
    try:
        info = probe(path)
        scan = scan_scenes(info, cfg)
    except ProbeError as e:
        return [_rejected(path, sha, size, str(e))]
    if info.video_streams > 1:
        log.warning(
            "%s: %d video streams; using stream %d (the first)", path, info.video_streams, info.video_stream
        )
    windows = clip_windows(scan.frame_times, scan.end_s, scan.cuts, cfg.min_clip_s, cfg.max_clip_s)
    if not windows:
        longest = max(
            (
                b - a
                for a, b in zip(
                    [scan.frame_times[0], *scan.frame_times[scan.cuts]],
                    [*scan.frame_times[scan.cuts], scan.end_s],
                )
            ),
            default=0.0,
        )
        return [
            _rejected(path, sha, size, f"no scene of {cfg.min_clip_s:g} s or more (longest {longest:.2f} s)")
        ]
    width, height = (info.height, info.width) if scan.rotation % 180 else (info.width, info.height)
    deltas = scan.frame_times[1:] - scan.frame_times[:-1]
    vfr = bool(len(deltas) > 1 and deltas.max() > 1.1 * deltas.min())
    common = dict(
        status=OK,
        reason=None,
        source_path=str(path),
        source_sha256=sha,
        source_bytes=size,
        source_duration_s=scan.end_s - float(scan.frame_times[0]),
        fps=info.fps,
        vfr=vfr,
        width=width,
        height=height,
        rotation=scan.rotation,
        video_stream=info.video_stream,
        audio_stream=info.audio_stream,
        has_audio=info.has_audio,
        video_start_s=info.video_start_s,
        audio_start_s=info.audio_start_s,
        detector=scan.detector,
        detector_params=json.dumps(scan.params, sort_keys=True),
    )
    return [
        dict(
            common,
            clip_id=clip_id(sha, w.start_frame, w.end_frame),
            scene_index=w.scene_index,
            window_index=w.window_index,
            start_s=w.start_s,
            end_s=w.end_s,
            duration_s=w.duration_s,
            start_frame=w.start_frame,
            end_frame=w.end_frame,
        )
        for w in windows
    ]


def reason_kind(reason: str) -> str:
    """The category of a one-line reason ("truncated or corrupt: decoded ..." → its head)."""
    return reason.split(":")[0].split(" (")[0].strip()


@dataclass
class IngestSummary:
    manifest: Path
    sources: int = 0
    cached: int = 0
    clips: int = 0
    clip_seconds: float = 0.0
    rejected: dict[str, str] = field(default_factory=dict)  # source path → reason
    kept: int = 0  # sources of an existing manifest that were not among the inputs, kept as they were
    replaced: int = 0  # sources of an existing manifest dropped by ``replace=True``

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(reason_kind(r) for r in self.rejected.values())


class _IngestOne:
    """Picklable stage callable (a local process pool or Ray ships it to workers)."""

    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg

    def __call__(self, path: Path) -> list[dict[str, Any]]:
        return ingest_source(path, self.cfg)


def _cache_key(path: Path, cfg: IngestConfig) -> str:
    # Path + size + mtime find the cache entry without hashing the file again; the rows inside
    # carry the content hash, and the recipe is part of the key so a changed recipe recomputes.
    st = path.stat()
    raw = json.dumps([str(path), st.st_size, st.st_mtime_ns, as_dict(cfg)], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@locks_dataset("dataset", create=True)
def ingest(
    inputs: Iterable[str | Path],
    dataset: str | Path,
    cfg: IngestConfig | None = None,
    workers: int | None = None,
    engine: str = "local",
    progress: bool = True,
    replace: bool = False,
) -> IngestSummary:
    """Ingest every video under ``inputs`` into ``dataset``/manifest.parquet; resumable.

    Into an existing dataset the inputs are added: the manifest keeps the rows of every source it
    already holds (in their order, so label's finished shards stay valid), a source ingested again
    gets its new rows in place, new sources are appended. ``replace=True`` starts the manifest over.
    """
    cfg = cfg or IngestConfig()
    if cfg.detector not in DETECTORS:
        raise InputError(f"unknown scene detector {cfg.detector!r}; choose from {sorted(DETECTORS)}")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {sorted(ENGINES)}")
    dataset = Path(dataset)
    cache = dataset / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dataset)
    remove_stale_temps(cache)
    sources = find_videos(inputs)
    summary = IngestSummary(manifest=dataset / MANIFEST, sources=len(sources))
    rows_by_source: dict[Path, list[dict[str, Any]]] = {}
    todo: list[Path] = []
    for src in sources:
        entry = cache / f"{_cache_key(src, cfg)}.parquet"
        cached = _read_cache(entry)
        if cached is not None:
            rows_by_source[src] = cached
            summary.cached += 1
        else:
            todo.append(src)
    bar = tqdm(total=len(todo), desc="ingest", unit="video", disable=not progress)
    for done in run(_IngestOne(cfg), todo, workers=workers, engine=engine):
        src = done.sample
        rows = done.result
        if isinstance(rows, Failed):  # reported now, not cached: a rerun tries the source again
            rows = [_rejected(src, None, None, f"internal error: {rows.reason}")]
        else:
            write_table(rows, MANIFEST_SCHEMA, cache / f"{_cache_key(src, cfg)}.parquet", "ingest-cache")
        rows_by_source[src] = rows
        bar.update()
    bar.close()
    new_rows = {rows_by_source[src][0]["source_path"]: rows_by_source[src] for src in sources}
    old_rows = {} if replace else _existing_rows(summary.manifest)
    if replace and summary.manifest.exists():
        summary.replaced = len(
            {r["source_path"] for r in read_table(summary.manifest).to_pylist()} - set(new_rows)
        )
    summary.kept = len(set(old_rows) - set(new_rows))
    manifest_rows = reject_duplicates(merge_sources(old_rows, new_rows))
    write_table(
        manifest_rows,
        MANIFEST_SCHEMA,
        summary.manifest,
        "manifest",
        {"ingest_config": json.dumps(as_dict(cfg), sort_keys=True)},
    )
    for row in manifest_rows:
        if row["status"] == OK:
            summary.clips += 1
            summary.clip_seconds += row["duration_s"]
        else:
            summary.rejected[row["source_path"]] = row["reason"]
    return summary


def _read_cache(entry: Path) -> list[dict[str, Any]] | None:
    """A source's cached rows; None when absent or damaged (a warning names it; it is redone)."""
    if not entry.exists():
        return None
    try:
        return read_table(entry).to_pylist()
    except ValueError as e:  # CorruptFileError, or another schema version
        log.warning("%s; ingesting that source again", e)
        return None


def reject_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A source whose content (SHA-256) an earlier source already has becomes one rejected row
    ``duplicate of PATH`` (with a warning): identical files would share clip ids and train twice."""
    first: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    done: set[str] = set()
    for row in rows:
        src, sha = row["source_path"], row["source_sha256"]
        if row["status"] != OK or sha is None:
            out.append(row)
        elif first.setdefault(sha, src) == src:
            out.append(row)
        elif src not in done:
            done.add(src)
            log.warning("%s: same content as %s; rejected as a duplicate", src, first[sha])
            dup = _rejected(Path(src), sha, row["source_bytes"], f"duplicate of {first[sha]}")
            out.append({**dup, "clip_id": clip_id(f"{sha}:{src}", -1, -1)})
    return out


def _existing_rows(manifest: Path) -> dict[str, list[dict[str, Any]]]:
    """An existing manifest's rows grouped by source path, in manifest order."""
    if not manifest.exists():
        return {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in read_table(manifest).to_pylist():
        by_source.setdefault(row["source_path"], []).append(row)
    return by_source


def merge_sources(
    old: dict[str, list[dict[str, Any]]], new: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Manifest rows after adding ``new`` sources to ``old`` ones: old order kept, a source in both
    takes its new rows in its old place, the other new sources follow in their given order.

    Keeping the old windows first and in order is what keeps label's finished shards valid."""
    rows = [row for src, rows in old.items() for row in new.get(src, rows)]
    return rows + [row for src, rows in new.items() if src not in old for row in rows]
