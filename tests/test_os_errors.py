"""OS errors and odd files are one line naming the path, never a traceback or a blocked run:
an output path that is a file, a read-only output, a full disk (a file-size limit: writes fail
midway the way ENOSPC makes them), a non-UTF-8 file name, a truncated ingest cache entry."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emokit.data.ingest import ingest
from emokit.data.schema import read_table
from emokit.data.wav2vec import save_tiny_wav2vec

VIDEO = "speaker_d_25fps_410x412.mp4"


def _emokit(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # writes past `fsize` bytes fail with EFBIG, as a full disk fails them
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "emokit", *args, "-q"],
        capture_output=True,
        text=True,
        preexec_fn=limit if fsize else None,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _one_line_naming(r: subprocess.CompletedProcess, path: Path) -> None:
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and str(path) in errors[0], r.stderr  # (MediaPipe logs its own lines)


def test_output_path_that_is_a_file(videos, tmp_path):
    out = tmp_path / "dataset"
    out.write_text("not a folder")
    r = _emokit("ingest", str(videos / VIDEO), "-o", str(out))
    _one_line_naming(r, out)
    assert "not a folder" in r.stderr and out.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(videos, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _one_line_naming(_emokit("ingest", str(videos / VIDEO), "-o", str(ro / "ds")), ro / "ds")
    finally:
        ro.chmod(0o755)


def test_disk_full_during_ingest_and_label(videos, tmp_path):
    ds = tmp_path / "ds"
    r = _emokit("ingest", str(videos / VIDEO), "-o", str(ds), fsize=2048)
    _one_line_naming(r, ds / ".ingest")  # the cache entry being written
    assert not [p for p in ds.rglob("*") if p.name.endswith(".tmp")]  # no partial file left
    assert _emokit("ingest", str(videos / VIDEO), "-o", str(ds)).returncode == 0
    w2v = save_tiny_wav2vec(tmp_path / "w2v")
    r = _emokit("label", str(ds), "--size", "64", "--audio-model", str(w2v), "-w", "1", fsize=20_000)
    _one_line_naming(r, ds / "shards" / "shard-00000.parquet")
    assert not list((ds / "shards").iterdir())


def test_non_utf8_file_name_is_one_rejected_row(videos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(videos / VIDEO, folder / "good.mp4")
    bad = os.path.join(os.fsencode(folder), b"bad\xff.mp4")
    shutil.copy(videos / VIDEO, bad)
    s = ingest([folder], tmp_path / "ds", workers=1, progress=False)
    rows = read_table(tmp_path / "ds" / "manifest.parquet").to_pylist()
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(rejected) == 1 and rejected[0]["reason"] == "file name is not valid UTF-8"
    assert rejected[0]["source_path"].endswith("bad\\xff.mp4")
    assert s.clips == 1 and [Path(r["source_path"]).name for r in rows if r["status"] == "ok"] == ["good.mp4"]
    again = ingest([folder], tmp_path / "ds", workers=1, progress=False)  # a rerun adds no duplicate
    assert read_table(tmp_path / "ds" / "manifest.parquet").to_pylist() == rows and again.kept == 0


def test_truncated_ingest_cache_entry_is_redone_with_a_warning(videos, tmp_path, caplog):
    ds = tmp_path / "ds"
    ingest([videos / VIDEO], ds, workers=1, progress=False)
    rows = read_table(ds / "manifest.parquet").to_pylist()
    (entry,) = (ds / ".ingest").glob("*.parquet")
    entry.write_bytes(entry.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        s = ingest([videos / VIDEO], ds, workers=1, progress=False)
    assert s.cached == 0 and any(entry.name in m for m in caplog.messages)
    assert read_table(ds / "manifest.parquet").to_pylist() == rows
    assert read_table(entry).to_pylist() == rows  # the entry is whole again
