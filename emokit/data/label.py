"""`emokit label`: clip windows → 30 FPS face crops, boxes, head pose, velocities, Wav2Vec tokens,
quality flags → self-contained Parquet shards.

Two halves. The video stage (:func:`emokit.data.label_video.label_window`) runs in worker
processes, one manifest window each, and never imports torch. Wav2Vec2 runs once, here in the
parent, on the audio the workers hand back: one model load per run instead of one per worker
(torch + transformers cost ~4 s of CPU to import), on the GPU when there is one, loaded in a
background thread while the workers start.

:func:`label` groups the manifest's usable windows into fixed shards (:func:`plan_shards`:
finished shards keep their windows, the rest fill the free indices in manifest order), runs the
stage over the windows of shards not yet written, and writes each shard atomically as soon as its
windows are done — a killed run loses at most the shards in flight, and a rerun produces the same
shards.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from emokit.config import LabelConfig, as_dict
from emokit.data.atomic import remove_stale_temps
from emokit.data.audio_model import PRECISIONS, check_audio_model
from emokit.data.executor import Failed, run
from emokit.data.ingest import MANIFEST, reason_kind
from emokit.data.label_video import WindowLabels, label_window
from emokit.data.lock import locks_dataset
from emokit.data.schema import OK, SHARD_SCHEMA, read_table, verify_table, write_table

log = logging.getLogger(__name__)

SHARDS = "shards"
# Wav2Vec2-base tokens 10 s of audio in ~0.7 s of one core (bf16) while a worker needs ~4 s for
# the same window's video: one parent thread per four workers keeps up.
WORKERS_PER_AUDIO_THREAD = 4


def shard_path(dataset: Path, index: int) -> Path:
    return dataset / SHARDS / f"shard-{index:05d}.parquet"


@dataclass
class LabelSummary:
    shards_dir: Path
    windows: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    clips: int = 0
    clip_seconds: float = 0.0
    split_windows: int = 0
    dropped_frames: int = 0  # window frames no clip keeps (pieces between jump cuts too short)
    drop_reasons: dict[str, str] = field(default_factory=dict)  # parent clip id → why
    flags: Counter[str] = field(default_factory=Counter)
    rejected: dict[str, str] = field(default_factory=dict)  # clip id → reason

    @property
    def rejected_by_reason(self) -> Counter[str]:
        return Counter(reason_kind(r) for r in self.rejected.values())


class _VideoStage:
    """Picklable worker stage; caps OpenCV's and x264's threads so workers do not oversubscribe."""

    def __init__(self, cfg: LabelConfig, bounds: tuple[float, float], threads: int) -> None:
        self.cfg, self.bounds, self.threads = cfg, bounds, threads

    def __call__(self, window: dict[str, Any]) -> WindowLabels:
        import cv2

        before = cv2.getNumThreads()
        cv2.setNumThreads(self.threads)
        try:
            return label_window(window, self.cfg, self.bounds, threads=self.threads)
        finally:
            cv2.setNumThreads(before)  # in-process runs (workers=1) leave the caller as it was


class _AudioStage:
    """Wav2Vec2 tokens for the windows the workers label, computed in this (the parent) process."""

    def __init__(self, cfg: LabelConfig, device: str, threads: int, needed: bool, syncnet=None) -> None:
        self.cfg = cfg
        self.syncnet = syncnet  # a loaded emokit.data.syncnet.SyncNet, or None (mouth-motion sync)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="emokit-wav2vec")
        # _load caps torch's threads in the pool thread, and torch keeps that count process-wide
        # for every thread that has not run torch work yet (its main thread included): close()
        # puts the caller's back, or label() called as a library (bench_learn) would leave the
        # caller's later matrix products on label's thread count instead of the one it chose.
        # Only a caller that has imported torch can have chosen one (not imported here: the
        # import stays in the pool thread, beside the workers' start).
        torch = sys.modules.get("torch")
        self._caller_threads: int | None = torch.get_num_threads() if needed and torch else None
        # Not loaded at all when no window has audio (no hub lookups for silent datasets).
        self._encoder: Future | None = self._pool.submit(self._load, device, threads) if needed else None

    def _load(self, device: str, threads: int):
        import torch

        from emokit.data.wav2vec import open_audio_encoder

        torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--audio-device {device}: this torch build or machine has no CUDA")
        cfg = self.cfg
        return open_audio_encoder(
            cfg.audio_model,
            layers=cfg.audio_layers,
            device=device,
            chunk_s=cfg.audio_chunk_s,
            overlap_s=cfg.audio_overlap_s,
            precision=cfg.audio_precision,
        )

    def attach(self, labels: WindowLabels) -> None:
        """Add tokens to the window's ok rows (the window's tokens, sliced per clip) or flag
        no_audio. Raises AudioModelError if the model failed to load.

        The thread count stays the one set at load for the whole run: bf16 results change with
        it, and a rerun (with the same --workers) must give the same shards."""
        ok = [(row, off) for row, off in zip(labels.rows, labels.offsets) if row["status"] == OK]
        if not ok:
            return
        tokens = None
        if labels.audio is not None and self._encoder is not None:
            tokens = self._encoder.result()(labels.audio, labels.frames, self.cfg.fps)
        if labels.audio is not None and self.syncnet is not None:
            for row, off in ok:
                _syncnet_label(self.syncnet, row, off, labels.audio, self.cfg.fps)
        for row, off in ok:
            if tokens is None:
                row["flags"] = sorted({*row["flags"], "no_audio"})
                continue
            part = np.ascontiguousarray(tokens[off : off + row["num_frames"]], dtype="<f2")
            row.update(
                audio_model=self.cfg.audio_model,
                audio_shape=list(part.shape),
                audio_embeddings=part.tobytes(),
            )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._caller_threads is not None:
            import torch

            torch.set_num_threads(self._caller_threads)
            self._caller_threads = None


def _syncnet_label(net, row: dict[str, Any], off: int, audio: np.ndarray, fps: int) -> None:
    """Replace the row's mouth-motion sync label with SyncNet's (``--syncnet``)."""
    from emokit.data.label_video import AUDIO_SR
    from emokit.data.syncnet import clip_sync

    part = audio[round(off / fps * AUDIO_SR) : round((off + row["num_frames"]) / fps * AUDIO_SR)]
    sync = clip_sync(net, row["video_mp4"], np.array(row["face_boxes"]), part, fps, AUDIO_SR)
    row.update(sync.row())
    row["flags"] = sorted({f for f in row["flags"] if f not in ("av_offset", "no_lipsync")} | set(sync.flags))


def usable_windows(dataset: Path) -> list[dict[str, Any]]:
    """The manifest's ok windows, in manifest order (the order that fixes shard membership)."""
    manifest = dataset / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest at {manifest}: run `emokit ingest ... -o {dataset}` first")
    ok = [r for r in read_table(manifest).to_pylist() if r["status"] == OK]
    seen: set[str] = set()
    unique = []
    for r in ok:  # one row per clip id
        if r["clip_id"] not in seen:
            seen.add(r["clip_id"])
            unique.append(r)
    return unique


@locks_dataset("dataset")
def label(
    dataset: str | Path,
    cfg: LabelConfig | None = None,
    bounds: tuple[float, float] = (3.0, 12.0),
    workers: int | None = None,
    engine: str = "local",
    progress: bool = True,
    audio_device: str = "auto",
) -> LabelSummary:
    """Label every usable window of ``dataset``'s manifest into ``dataset/shards``; resumable.

    ``audio_device``: where Wav2Vec2 runs ("auto" = CUDA when available, else the CPU).
    """
    cfg = cfg or LabelConfig()
    dataset = Path(dataset)
    windows = usable_windows(dataset)
    out = dataset / SHARDS
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    summary = LabelSummary(shards_dir=out, windows=len(windows))
    meta = {"label_config": json.dumps(as_dict(cfg), sort_keys=True)}
    groups, done = plan_shards(dataset, windows, cfg.shard_size, meta)
    for stale in sorted(out.glob("shard-*.parquet")):
        if _shard_index(stale) not in groups:
            stale.unlink()  # its windows left the manifest, or --shard-size / the recipe changed
    todo = [k for k in groups if k not in done]
    summary.shards_skipped = len(done)
    pending = work_order(groups, todo)
    if cfg.audio_precision not in PRECISIONS:
        raise ValueError(
            f"audio_precision must be one of {', '.join(PRECISIONS)}, got {cfg.audio_precision!r}"
        )
    needs_audio = any(w["has_audio"] for _, _, w in pending)
    if needs_audio:
        check_audio_model(cfg.audio_model)  # fail fast on the common mistakes, before any work
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", audio_device):
        raise ValueError(f"--audio-device must be auto, cpu, cuda or cuda:N, got {audio_device!r}")
    cores = os.cpu_count() or 1
    requested = workers or cores
    n_workers = min(requested, max(1, len(pending)))
    # From the requested workers, not from what is left to do: bf16 results depend on the thread
    # count, and a resumed run must give the shards a clean run gives.
    audio_threads = max(1, requested // WORKERS_PER_AUDIO_THREAD) if requested > 1 else cores
    syncnet = None
    if cfg.syncnet and needs_audio:  # loaded before any work: a wrong path fails at once
        from emokit.data.syncnet import load_syncnet

        syncnet = load_syncnet(cfg.syncnet)
    audio = _AudioStage(cfg, audio_device, audio_threads, needs_audio, syncnet)
    stage = _VideoStage(cfg, bounds, max(1, cores // n_workers))
    results: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(dict)
    failed: set[int] = set()
    bar = tqdm(total=len(pending), desc="label", unit="clip", disable=not progress)
    results_in = run(stage, [w for _, _, w in pending], workers=n_workers, engine=engine)
    try:
        for item in results_in:
            k, j, window = pending[item.index]
            labels = item.result
            if isinstance(labels, Failed):  # reported, its shard left unwritten: a rerun retries it
                summary.rejected[window["clip_id"]] = f"internal error: {labels.reason}"
                failed.add(k)
                labels = WindowLabels([])
            audio.attach(labels)
            results[k][j] = labels.rows
            bar.update()
            if len(results[k]) == len(groups[k]):
                by_window = results.pop(k)
                if k in failed:
                    continue
                shard_rows = [r for jj in range(len(groups[k])) for r in by_window[jj]]
                write_table(shard_rows, SHARD_SCHEMA, shard_path(dataset, k), "shard", meta, row_group_size=1)
                summary.shards_written += 1
    finally:  # on an error too: stop the workers (queued windows are cancelled) and the loader
        results_in.close()
        bar.close()
        audio.close()
    _count(summary, dataset, sorted(groups))
    return summary


def work_order(groups: dict[int, list[dict[str, Any]]], todo: list[int]) -> list[tuple[int, int, dict]]:
    """(shard, index in shard, window) in the order workers get them: shard by shard, and the
    longest window first within a shard (longest-processing-time order). The last windows handed
    out are then the short ones, so the workers run out of work at nearly the same time instead of
    one core idling while another finishes a 12 s window; shards still complete in order."""
    return [
        (k, j, w)
        for k in todo
        for j, w in sorted(enumerate(groups[k]), key=lambda jw: jw[1]["start_s"] - jw[1]["end_s"])
    ]


def plan_shards(
    dataset: Path, windows: list[dict[str, Any]], shard_size: int, meta: dict[str, str]
) -> tuple[dict[int, list[dict[str, Any]]], set[int]]:
    """Shard index → its windows, and the indices whose shard is already done.

    A finished shard (intact, this recipe) whose windows are all still usable in the manifest keeps
    its index and its bytes, so adding videos to a dataset never rewrites or deletes it. The other
    windows, in manifest order, fill the free indices in increasing order, ``shard_size`` at a
    time: the layout a clean run gives, so the rerun of a killed run gives the same shards.
    """
    by_id = {w["clip_id"]: w for w in windows}
    groups: dict[int, list[dict[str, Any]]] = {}
    claimed: set[str] = set()
    for path in sorted((dataset / SHARDS).glob("shard-*.parquet")):
        parents = _finished_parents(path, meta)
        if parents and all(p in by_id and p not in claimed for p in parents):
            groups[_shard_index(path)] = [by_id[p] for p in parents]
            claimed.update(parents)
    done = set(groups)
    rest = [w for w in windows if w["clip_id"] not in claimed]
    free = (k for k in itertools.count() if k not in done)
    for i in range(0, len(rest), shard_size):
        groups[next(free)] = rest[i : i + shard_size]
    return dict(sorted(groups.items())), done


def _shard_index(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _finished_parents(path: Path, meta: dict[str, str]) -> list[str] | None:
    """The manifest windows of a finished shard in row order, or None when it must be redone:
    written with another recipe (--size, audio model, ...), unreadable, or failing its page
    checksums (every page is read: a shard corrupted on disk is relabelled, not kept)."""
    try:
        stored = (pq.read_schema(path).metadata or {}).get(b"label_config", b"").decode()
        if stored != meta["label_config"]:
            return None
        verify_table(path)
        table = read_table(path, columns=["parent_clip_id"])
    except (OSError, ValueError, pa.ArrowException) as e:
        log.warning("%s: %s; it will be labelled again", path, e)
        return None
    return list(dict.fromkeys(table.column("parent_clip_id").to_pylist()))


def _count(summary: LabelSummary, dataset: Path, indices: list[int]) -> None:
    cols = ["clip_id", "parent_clip_id", "status", "reason", "num_frames", "fps", "jump_cut_split", "flags"]
    cols += ["dropped_frames", "drop_reason"]
    split_parents = set()
    for k in indices:
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
            if r["dropped_frames"] and r["parent_clip_id"] not in summary.drop_reasons:
                summary.dropped_frames += r["dropped_frames"]  # once per window (every row has it)
                summary.drop_reasons[r["parent_clip_id"]] = r["drop_reason"]
    summary.split_windows = len(split_parents)
