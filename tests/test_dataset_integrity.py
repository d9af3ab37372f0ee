"""A dataset survives growth and damage: adding videos keeps finished shards byte for byte, a
corrupted shard is relabelled instead of counted as done, and readers name the damaged file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emokit.config import LabelConfig
from emokit.data.ingest import ingest
from emokit.data.label import label
from emokit.data.schema import SHARD_SCHEMA, CorruptFileError, read_table
from emokit.data.wav2vec import save_tiny_wav2vec

A, B = "speaker_d_25fps_410x412.mp4", "head_turn_25fps_224.mp4"


def _windows(ds: Path) -> list[str]:
    return [r["clip_id"] for r in read_table(ds / "manifest.parquet").to_pylist() if r["status"] == "ok"]


def _shard_bytes(ds: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ds / "shards").glob("shard-*.parquet"))}


def _labelled_parents(ds: Path) -> list[str]:
    return [
        r["parent_clip_id"]
        for p in sorted((ds / "shards").glob("shard-*.parquet"))
        for r in read_table(p, columns=["parent_clip_id"]).to_pylist()
    ]


@pytest.fixture(scope="module")
def grown(videos, tmp_path_factory):
    """Ingest A, label; ingest B into the same dataset, label again."""
    root = tmp_path_factory.mktemp("grown")
    cfg = LabelConfig(size=64, audio_model=str(save_tiny_wav2vec(root / "w2v")), shard_size=2)
    ds = root / "ds"
    ingest([videos / A], ds, workers=1, progress=False)
    first = label(ds, cfg, workers=1, progress=False)
    before, a_windows = _shard_bytes(ds), _windows(ds)
    added = ingest([videos / B], ds, workers=1, progress=False)
    second = label(ds, cfg, workers=1, progress=False)
    return ds, cfg, first, before, a_windows, added, second


def test_ingest_into_existing_dataset_adds_and_label_keeps_finished_shards(grown):
    ds, _, first, before, a_windows, added, second = grown
    assert first.shards_written == 1 and len(a_windows) == 1  # A: one window, a partly filled shard
    windows = _windows(ds)
    assert windows[: len(a_windows)] == a_windows and len(windows) > len(a_windows)  # added, A first
    assert added.kept == 1 and added.sources == 1
    after = _shard_bytes(ds)
    for name, data in before.items():
        assert after[name] == data  # A's shard untouched byte for byte
    assert second.shards_skipped == len(before) and second.shards_written == len(after) - len(before) > 0
    assert sorted(_labelled_parents(ds)) == sorted(windows)  # every window labelled exactly once


def test_replace_starts_the_manifest_over(grown, videos, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(grown[0], ds)
    s = ingest([videos / B], ds, workers=1, progress=False, replace=True)
    assert s.replaced == 1 and s.kept == 0
    assert {Path(r["source_path"]).name for r in read_table(ds / "manifest.parquet").to_pylist()} == {B}


def test_corrupt_shard_is_relabelled_and_readers_name_it(grown, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(grown[0], ds)
    shard = sorted((ds / "shards").glob("shard-*.parquet"))[-1]
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 65536] = bytes(min(65536, len(data) - mid))  # 64 KB zeroed inside the media
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=shard.name):
        read_table(shard)
    r = subprocess.run([sys.executable, "-m", "emokit", "inspect", str(ds)], capture_output=True, text=True)
    assert r.returncode != 0 and shard.name in r.stderr and "Traceback" not in r.stderr, r.stderr
    s = label(ds, grown[1], workers=1, progress=False)
    assert s.shards_written == 1  # redone, not "already done"
    assert read_table(shard).num_rows > 0 and sorted(_labelled_parents(ds)) == sorted(_windows(ds))


def test_corrupt_clip_media_is_a_clip_error_naming_the_shard(grown, tmp_path):
    from emokit.train.dataset import ClipDataset, ClipError, index_clips

    ds = tmp_path / "ds"
    shutil.copytree(grown[0], ds)
    clips, _ = index_clips(ds, stage=1, frames=1, motion_frames=0)
    clip = clips[-1]
    chunk = (
        pq.ParquetFile(clip.shard)
        .metadata.row_group(clip.row_group)
        .column(SHARD_SCHEMA.names.index("video_mp4"))
    )
    data = bytearray(clip.shard.read_bytes())
    first = chunk.dictionary_page_offset or chunk.data_page_offset  # the column chunk's first page
    start = first + 64  # past the page header: the mp4 bytes change, the file stays Parquet
    end = min(start + 65536, first + chunk.total_compressed_size)
    data[start:end] = bytes(end - start)
    clip.shard.write_bytes(bytes(data))
    with pytest.raises(ClipError, match=clip.shard.name):
        ClipDataset([clip], stage=1, resolution=64)[0]
