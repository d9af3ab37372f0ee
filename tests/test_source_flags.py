"""Silent source problems become flags or warnings: audio shorter than its video (`audio_short`),
a source upscaled a lot to the crop size (`upscaled`), identical files (one kept, the others
rejected as duplicates), a file with several video streams (a warning naming the one used)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from emokit.config import LabelConfig
from emokit.data.ingest import ingest
from emokit.data.label_video import label_window
from emokit.data.schema import read_table

VIDEO = "speaker_d_25fps_410x412.mp4"  # 6.76 s, audio 6.74 s; the audio is stream 0


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _ok_window(ds: Path) -> dict:
    (w,) = [r for r in read_table(ds / "manifest.parquet").to_pylist() if r["status"] == "ok"]
    return w


def _flags(source: Path, ds: Path, size: int) -> list[str]:
    ingest([source], ds, workers=1, progress=False)
    (row,) = label_window(_ok_window(ds), LabelConfig(size=size), (3.0, 12.0)).rows
    assert row["status"] == "ok", row["reason"]
    return row["flags"]


@pytest.fixture(scope="module")
def short_small(videos, tmp_path_factory) -> Path:
    """The real clip at 160 px with its audio cut to 4 s of its 6.76 s."""
    out = tmp_path_factory.mktemp("src") / "short_small.mp4"
    _ffmpeg(
        "-i", str(videos / VIDEO), "-vf", "scale=160:160", "-af", "atrim=0:4", "-c:v", "libx264", str(out)
    )
    return out


def test_short_audio_and_upscaled_source_are_flagged(videos, short_small, tmp_path):
    assert {"audio_short", "upscaled"} <= set(_flags(short_small, tmp_path / "a", size=352))  # > 2 x 160
    plain = _flags(videos / VIDEO, tmp_path / "b", size=128)  # full audio, crop downscaled
    assert "audio_short" not in plain and "upscaled" not in plain


def test_identical_files_are_one_clip_and_a_duplicate_row(videos, tmp_path, caplog):
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(videos / VIDEO, tmp_path / name)
    with caplog.at_level(logging.WARNING):
        s = ingest([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "ds", workers=1, progress=False)
    rows = read_table(tmp_path / "ds" / "manifest.parquet").to_pylist()
    assert [Path(r["source_path"]).name for r in rows if r["status"] == "ok"] == ["a.mp4"]
    (dup,) = [r for r in rows if r["status"] == "rejected"]
    assert dup["reason"] == f"duplicate of {(tmp_path / 'a.mp4').resolve()}" and s.clips == 1
    assert len({r["clip_id"] for r in rows}) == len(rows)
    assert any("b.mp4" in m and "duplicate" in m for m in caplog.messages)


def test_several_video_streams_warn_which_is_used(videos, tmp_path, caplog):
    two = tmp_path / "two_video_streams.mp4"
    _ffmpeg("-i", str(videos / VIDEO), "-map", "0:v", "-map", "0:v", "-map", "0:a", "-c", "copy", str(two))
    with caplog.at_level(logging.WARNING):
        ingest([two], tmp_path / "ds", workers=1, progress=False)
    assert any("2 video streams; using stream" in m and two.name in m for m in caplog.messages)
